"""`sweagent-oec shift` end to end on two small trajectory sets written here: an expert that works
methodically, a student that starts like it and drifts to other moves as the turns go on."""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from covariate_shift_analysis.turns import load_set, steps_of
from sweagent_oec.cli import app
from sweagent_oec.data.trajectory import EXPERT, STUDENT, Step, Trajectory, TrajectoryInfo, load_trajectory, save_trajectory, trajectory_path

FIXTURES = Path(__file__).parent / "data" / "fixtures" / "swe_agent_traj"
CLI = Path(sys.executable).parent / "sweagent-oec"
FILES = ["parser.py", "lexer.py", "utils.py", "cli.py", "core.py"]
N_TURNS = 7


def _expert_turn(rng: random.Random, t: int, f: str) -> tuple[str, str]:
    return rng.choice([
        (f"str_replace_editor view /testbed/src/{f}", f"Here's the result of running `cat -n` on /testbed/src/{f}:\n 1\timport os"),
        (f"grep -rn 'def {f[:-3]}_token' /testbed/src", f"/testbed/src/{f}:{t * 7}:def {f[:-3]}_token(value):"),
        (f"python -m pytest tests/test_{f[:-3]}.py -x -q", f"{t} passed, 1 failed in 0.{t}s"),
        (f"str_replace_editor str_replace /testbed/src/{f} --old_str 'return value' --new_str 'return value.strip()'", f"The file /testbed/src/{f} has been edited."),
    ])


def _student_turn(rng: random.Random, t: int, f: str) -> tuple[str, str]:
    if rng.random() < t / (N_TURNS - 2):  # drifts more with every turn
        return rng.choice([
            ("ls", "README.md  setup.py  src  tests"),
            (f"cat src/{f}", f"cat: src/{f}: No such file or directory"),
            ("echo 'I will now fix the bug'", "I will now fix the bug"),
            ("python reproduce.py", "Traceback (most recent call last):\nNameError: name 'x' is not defined"),
        ])
    return _expert_turn(rng, t, f)


def write_set(folder: Path, role: str, n_instances: int = 12, seed: int = 0, prefix: str = "repo__pkg") -> None:
    rng = random.Random(f"{role}{seed}")
    for i in range(n_instances):
        f = FILES[i % len(FILES)]
        length = N_TURNS - (i % 3 if role == EXPERT else 0)  # expert runs differ in length
        steps = []
        for t in range(length):
            action, observation = (_expert_turn if role == EXPERT else _student_turn)(rng, t, f)
            steps.append(Step(action=action, observation=observation, thought=f"step {t}", response=action, model_role=role))
        save_trajectory(trajectory_path(folder, f"{prefix}.{i:04d}"), Trajectory(trajectory=steps, info=TrajectoryInfo(exit_status="submitted")))


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("shift")
    write_set(root / "claude", EXPERT)
    write_set(root / "qwen", STUDENT)
    return root


def shift(*args: str):
    result = CliRunner().invoke(app, ["shift", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def cli_error(*args: str, env: dict | None = None) -> str:
    """Run the installed command; it must fail with exit 2 and one line naming the problem."""
    proc = subprocess.run([str(CLI), "shift", *args], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_shift_writes_table_json_and_plots(sets, tmp_path):
    out = tmp_path / "out"
    shift("--set", f"expert={sets / 'claude'}", "--set", f"student={sets / 'qwen'}", "--reference", "expert",
          "-o", str(out), "--cache-dir", str(sets / "cache"), "--min-instances", "8", "--bootstrap", "10", "--pca", "8")
    with open(out / "shift.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["metric", "set", "reference", "turn", "n", "estimate", "ci_low", "ci_high", "level", "n_boot",
                             "n_rollouts", "protocol"]
    assert {r["protocol"] for r in rows} == {"default"}
    assert {r["metric"] for r in rows} == {"frechet", "kl", "mmd2", "auc"}
    # Turn 7 has only the 4 expert runs of full length: below --min-instances, so not reported.
    assert sorted({int(r["turn"]) for r in rows}) == list(range(1, N_TURNS))
    for r in rows:
        assert float(r["ci_low"]) <= float(r["ci_high"]) and r["set"] == "student" and r["reference"] == "expert"
        assert int(r["n"]) >= 8
    frechet = {int(r["turn"]): float(r["estimate"]) for r in rows if r["metric"] == "frechet"}
    auc = {int(r["turn"]): float(r["estimate"]) for r in rows if r["metric"] == "auc"}
    assert frechet[6] > 2 * frechet[1]  # the student drifts away
    assert auc[6] >= 0.85 and auc[6] > auc[1] + 0.3
    summary = json.loads((out / "shift.json").read_text())
    assert summary["texts_embedded"] > 0 and summary["settings"]["pca"] == 8
    assert any("both 'expert' and the compared set" in rule for rule in summary["qualifying_rules"])
    assert len(summary["rows"]) == len(rows)
    for metric in ("frechet", "kl", "mmd2", "auc"):
        for suffix in (".png", ".pdf"):
            assert (out / f"shift_{metric}{suffix}").stat().st_size > 5000


def test_second_run_embeds_nothing_and_cut_at_median(sets, tmp_path):
    common = ["--set", f"expert={sets / 'claude'}", "--set", f"student={sets / 'qwen'}", "--cache-dir", str(tmp_path / "cache"),
              "--min-instances", "4", "--bootstrap", "5", "--metric", "frechet", "--metric", "mmd2", "--text", "both"]
    shift(*common, "-o", str(tmp_path / "a"))
    first = json.loads((tmp_path / "a" / "shift.json").read_text())
    assert first["texts_embedded"] > 0
    shift(*common, "-o", str(tmp_path / "b"), "--cut-at-median", "--drop-first-turn")
    second = json.loads((tmp_path / "b" / "shift.json").read_text())
    assert second["texts_embedded"] == 0
    # Expert lengths are 7, 6, 5 in turn: median 6, so turns 2..6 remain.
    assert second["settings"]["max_turn"] == 6
    assert sorted({r["turn"] for r in second["rows"]}) == [2, 3, 4, 5, 6]
    assert {r["metric"] for r in second["rows"]} == {"frechet", "mmd2"}


def test_several_rollouts_per_instance_all_used_or_capped_by_seed(tmp_path):
    for run in ("seed1", "seed2", "seed3"):
        write_set(tmp_path / run, STUDENT, n_instances=3, seed=int(run[-1]))
    every = load_set("s", tmp_path, "action")
    assert {iid: len(rs) for iid, rs in every.rollouts.items()} == {f"repo__pkg.{i:04d}": 3 for i in range(3)}
    assert every.several() == 3 and every.set_aside == {}
    picks = {seed: {iid: tuple(r.path for r in rs) for iid, rs in load_set("s", tmp_path, "action", seed=seed, max_rollouts=2).rollouts.items()}
             for seed in range(6)}
    assert all(len(p) == 2 for pick in picks.values() for p in pick.values())
    assert picks[0] == {iid: tuple(r.path for r in rs) for iid, rs in load_set("s", tmp_path, "action", seed=0, max_rollouts=2).rollouts.items()}
    assert len({tuple(sorted(p.items())) for p in picks.values()}) > 1  # the seed changes the pick
    assert load_set("s", tmp_path, "action", max_rollouts=2).set_aside == {"beyond 2 rollouts per instance": 3}


def test_default_protocol_uses_every_rollout(sets, tmp_path):
    """Two student rollouts per instance (a repeat in a sub-folder and a branch file): rows count
    the instances once and every rollout in n_rollouts."""
    import shutil

    both = tmp_path / "student"
    shutil.copytree(sets / "qwen", both / "seed0")
    write_set(tmp_path / "again", STUDENT, seed=5)
    for traj in (tmp_path / "again").rglob("*.traj"):
        target = both / "seed5" / traj.parent.name / f"{traj.stem}__b1.traj"
        target.parent.mkdir(parents=True)
        shutil.copy(traj, target)
    out = tmp_path / "out"
    result = shift("--set", f"expert={sets / 'claude'}", "--set", f"student={both}", "-o", str(out), "--cache-dir", str(sets / "cache"),
                   "--min-instances", "8", "--bootstrap", "10", "--metric", "frechet", "--metric", "mmd2", "--metric", "auc", "--pca", "8")
    summary = json.loads((out / "shift.json").read_text())
    assert summary["sets"]["student"]["rollouts"] == 24 and summary["sets"]["student"]["instances_with_several_rollouts"] == 12
    first = next(r for r in summary["rows"] if r["turn"] == 1)
    assert (first["n"], first["n_rollouts"]) == (12, 24)
    assert all(r["ci_low"] <= r["ci_high"] and r["n_boot"] >= 5 for r in summary["rows"])
    assert "default protocol" in result.output


def test_swe_agent_trajectories_including_history_only_ones():
    steps = steps_of(load_trajectory(FIXTURES / "function_calling_simple.traj"))
    assert [s.action for s in steps][:2] == ["find_file missing_colon.py", 'open "tests/missing_colon.py"']
    assert steps[0].observation.startswith('Found 1 matches for "missing_colon.py"')
    loaded = load_set("swe", FIXTURES, "both")
    assert len(loaded.rollouts) == 3 and len(loaded.rollouts["function_calling_simple"][0].texts) == 5
    assert loaded.rollouts["marshmallow-1867.xml"][0].texts[1].startswith("create reproduce.py\n")
    # The paper protocol's unit: every message, tool calls included.
    from covariate_shift_analysis.turns import message_texts

    messages = message_texts(load_trajectory(FIXTURES / "function_calling_simple.traj"))
    assert len(messages) == len(load_trajectory(FIXTURES / "function_calling_simple.traj").history)
    assert any("find_file(" in m and "missing_colon.py" in m for m in messages)


def test_bad_inputs_fail_with_one_line(sets, tmp_path):
    (tmp_path / "empty").mkdir()
    line = cli_error("--set", f"a={sets / 'claude'}", "--set", f"b={tmp_path / 'empty'}")
    assert "no .traj files under" in line
    write_set(tmp_path / "other", STUDENT, n_instances=4, prefix="other__repo")
    line = cli_error("--set", f"a={sets / 'claude'}", "--set", f"b={tmp_path / 'other'}", "--min-instances", "3")
    assert "no turn index has 3+ instances" in line and "share 0 instances" in line
    assert "LABEL=FOLDER" in cli_error("--set", "just-a-folder", "--set", f"b={sets / 'qwen'}")
    assert "--reference 'c'" in cli_error("--set", f"a={sets / 'claude'}", "--set", f"b={sets / 'qwen'}", "--reference", "c")
    (tmp_path / "broken" / "x").mkdir(parents=True)
    (tmp_path / "broken" / "x" / "x.traj").write_text("{not json")
    assert "x.traj: not valid JSON" in cli_error("--set", f"a={sets / 'claude'}", "--set", f"b={tmp_path / 'broken'}")


def test_unknown_model_fails_with_one_line(sets, tmp_path):
    args = ["--set", f"a={sets / 'claude'}", "--set", f"b={sets / 'qwen'}", "--min-instances", "4", "--cache-dir", str(tmp_path)]
    # Offline, so the hub lookup fails at once instead of retrying for a minute.
    line = cli_error(*args, "--model", "no-such-org/no-such-model", env={"HF_HUB_OFFLINE": "1"})
    assert "--model 'no-such-org/no-such-model': cannot load it" in line
    assert "no such folder" in cli_error(*args, "--model", str(tmp_path / "missing-model"))


def test_embedding_cache_roundtrip_and_unreadable_cache(tmp_path):
    from covariate_shift_analysis.embed import DEFAULT_MODEL, EmbeddingCache, embed_texts, load_model
    from sweagent_oec.errors import UserError

    texts = ["ls -la", "python -m pytest -x", "ls -la"]
    vectors, embedded = embed_texts(texts, cache_dir=tmp_path)
    assert embedded == 2 and vectors.shape == (3, 384)
    assert (vectors[0] == vectors[2]).all()
    direct = load_model(DEFAULT_MODEL).encode(texts[:2])
    assert abs(vectors[:2] - direct).max() < 1e-5
    again, embedded = embed_texts(texts, cache_dir=tmp_path)
    assert embedded == 0 and (again == vectors).all()
    path = EmbeddingCache(tmp_path, DEFAULT_MODEL).path
    path.write_bytes(b"not an npz")
    with pytest.raises(UserError, match="delete it to rebuild"):
        embed_texts(texts, cache_dir=tmp_path)
