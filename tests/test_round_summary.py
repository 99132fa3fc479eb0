"""The round table's student columns: malformed replies per student step and steps before the switch,
read from real trajectories (a replayed student with malformed replies, the oracle-like replay expert)."""

import json
from pathlib import Path

import pytest

from sweagent_oec.config import build_config
from sweagent_oec.round_summary import summarize_round
from sweagent_oec.rounds import Rounds, RoundsConfig
from sweagent_oec.runner import run_instance
from tests.agent_helpers import SOLUTION, switching_config, tinycalc, write_replay
from tests.test_rounds import setup  # noqa: F401  (the tiny-model rounds fixture)


def act(command):
    return {"thought": "", "action": command}


def replay_side(path):
    return {"name": "replay", "replay_path": str(path), "tools": {"parse_function": {"type": "function_calling"}}}


SOLUTION_ITEMS = [json.loads(line) for line in SOLUTION.read_text().splitlines() if line.strip()]


@pytest.fixture
def round_folder(tmp_path):
    """round/trajectories with two runs: one handed over by the format_errors trigger, one the student finished alone."""
    out = tmp_path / "round" / "trajectories"
    task = tinycalc(tmp_path)
    runs = {
        # 2 student steps (one after a re-query), then 2 malformed replies in a row: the expert takes over at step 2.
        # The expert's own malformed reply is not the student's.
        "handed": ([act("ls"), "garbage 1", act("cat calc.py"), "garbage 2", "garbage 3", act("echo never")],
                   ["expert garbage"] + SOLUTION_ITEMS),
        # One malformed reply, then the student solves it alone: every step is before the (absent) switch.
        "alone": (["garbage 4"] + SOLUTION_ITEMS, SOLUTION_ITEMS),
    }
    for instance_id, (student, expert) in runs.items():
        data = switching_config(replay_side(write_replay(tmp_path, student, f"{instance_id}.student.jsonl")),
                                replay_side(write_replay(tmp_path, expert, f"{instance_id}.expert.jsonl")),
                                {"type": "format_errors", "threshold": 2})
        run_instance(build_config(data), task.model_copy(update={"instance_id": instance_id}), out)
    (out / "broken").mkdir()
    (out / "broken" / "broken.traj").write_text("{not json")
    return tmp_path / "round"


def test_summary_and_rounds_table_count_the_students_malformed_replies_and_steps_before_the_switch(round_folder, tmp_path):
    solution_steps = len(SOLUTION_ITEMS)
    summary = summarize_round(round_folder)
    assert summary["exit_statuses"]["unreadable"] == 1
    assert sorted(summary["switch_steps"], key=str) == [2, None]
    assert summary["student_steps"] == 2 + solution_steps
    assert summary["student_malformed_replies"] == 4  # garbage 1-4; not the expert's
    assert summary["student_steps_before_switch"] == round((2 + solution_steps) / 2, 3)  # the unreadable file is not a 0
    assert summary["student_malformed_per_step"] == round(4 / (2 + solution_steps), 4)
    written = json.loads((round_folder / "summary.json").read_text())
    assert written["student_malformed_per_step"] == summary["student_malformed_per_step"]

    # rounds.csv's row for a round folder holding the same trajectories says the same.
    (tmp_path / "rounds").mkdir()
    round_folder.rename(tmp_path / "rounds" / "round_1")
    config = RoundsConfig(output_dir="rounds", instances="x.jsonl", config=["x.yaml"], initial_checkpoint="ckpt",
                          serve={"command": "true"})
    row = Rounds(config, tmp_path).row(1, Path("ckpt"))
    assert row["mean_student_steps_before_switch"] == round((2 + solution_steps) / 2, 3)
    assert row["student_malformed_per_step"] == round(4 / (2 + solution_steps), 4)
    assert row["student_malformed_share"] == round(4 / (4 + 2 + solution_steps), 4)


def test_no_student_step_leaves_the_ratios_empty_not_zero(tmp_path):
    (tmp_path / "trajectories").mkdir()
    summary = summarize_round(tmp_path)
    assert summary["student_steps_before_switch"] is None and summary["student_malformed_per_step"] is None


def test_more_runs_names_are_checked():
    base = dict(instances="x", config=["x.yaml"], initial_checkpoint="c", serve={"command": "true"})
    assert RoundsConfig(**base, more_runs={"branches": ["b.yaml"]}).more_runs == {"branches": ["b.yaml"]}
    for bad in ({"../up": ["b.yaml"]}, {"gen": ["b.yaml"]}, {"Branches": ["b.yaml"]}, {"branches": []}):
        with pytest.raises(ValueError):
            RoundsConfig(**base, more_runs=bad)


def test_demo_rounds_config_loads_with_every_run_config():
    from sweagent_oec.config import load_config
    from sweagent_oec.rounds import load_rounds_config

    config, base = load_rounds_config(Path(__file__).parent.parent / "config" / "rounds" / "embedded_gemma.yaml")
    rounds = Rounds(config, base)
    kinds = {name: load_config([rounds._path(p) for p in group], []).agent.model.switching_criteria.type
             for name, group in {"main": config.config, **config.more_runs}.items()}
    assert kinds == {"main": "any_of", "branches": "branches"}


@pytest.mark.slow
def test_more_runs_generate_eval_and_join_training_beside_the_main_run(setup):
    """A round with a second switching run (branching) on the same served student: its own generate and eval
    stages, its data in the round's SFT mix and count; a rerun redoes nothing."""
    import csv
    import subprocess
    import sys

    import yaml

    tmp_path = setup
    rounds_file = tmp_path / "rounds.yaml"
    config = yaml.safe_load(rounds_file.read_text())
    switch = yaml.safe_load((tmp_path / "switch.yaml").read_text())
    switch["agent"]["model"]["switching_criteria"] = {"type": "branches", "steps": [0]}
    (tmp_path / "branch.yaml").write_text(yaml.safe_dump(switch))
    config.update(rounds=1, more_runs={"branches": ["branch.yaml"]})
    config.pop("heldout")
    rounds_file.write_text(yaml.safe_dump(config))

    def rerun():
        return subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "rounds", "-c", str(rounds_file)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900)

    result = rerun()
    assert result.returncode == 0, result.stdout + result.stderr
    folder = tmp_path / "out" / "round_1"
    assert {p.name for p in (folder / ".done").iterdir()} >= {"generate", "generate_branches", "eval", "eval_branches", "train"}
    branch_ids = sorted(p.parent.name for p in (folder / "trajectories_branches").glob("*/*.traj"))
    assert branch_ids == ["gen-0__b0", "gen-1__b0"]
    report = json.loads((folder / "eval" / "branches" / "report.json").read_text())
    assert report["total"] == 2
    paths = [json.loads(line)["traj_path"] for line in (folder / "sft" / "train.jsonl").read_text().splitlines()]
    assert any("/trajectories_branches/" in p for p in paths) and any("/trajectories/" in p for p in paths)
    row = next(csv.DictReader((tmp_path / "out" / "rounds.csv").open()))
    assert int(row["sft_records_this_round"]) == len(paths) and row["instances"] == "2"  # the main run's rows only
    finished = {p: p.stat().st_mtime_ns for p in folder.glob(".done/*")}
    assert rerun().returncode == 0
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())


SELF_PORTING_SERVER = r'''
import http.server, json, os, socket, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/v1/models" else 404); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a): pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
info = {"api_base": f"http://127.0.0.1:{server.server_port}/v1", "model": "hosted_vllm/own-alias", "served": sys.argv[2]}
tmp = sys.argv[1] + ".tmp"; open(tmp, "w").write(json.dumps(info)); os.replace(tmp, sys.argv[1])
server.serve_forever()
'''


def test_a_server_that_picks_its_own_port_is_reached_through_its_info_file(tmp_path):
    """`serve-student` picks its port and writes {api_base, model}: the round's run configs get those."""
    import sys
    import urllib.request

    from sweagent_oec.errors import UserError

    (tmp_path / "server.py").write_text(SELF_PORTING_SERVER)
    (tmp_path / "ckpt").mkdir()
    log = tmp_path / "r" / "serve.log"
    (tmp_path / "r").mkdir()
    log.with_suffix(".info.json").write_text(json.dumps({"api_base": "http://127.0.0.1:9/v1", "model": "stale"}))
    base = dict(instances="x", config=["x.yaml"], initial_checkpoint="ckpt")
    command = f"{sys.executable} server.py {{info_file}} {{checkpoint}}"
    rounds = Rounds(RoundsConfig(**base, serve={"command": command, "ready_timeout": 60}), tmp_path)
    with rounds.served(tmp_path / "ckpt", log) as served:
        assert served["model"] == "hosted_vllm/own-alias"  # not the stale file's, not the {checkpoint} default
        assert served["api_base"] != "http://127.0.0.1:9/v1"
        with urllib.request.urlopen(served["api_base"] + "/models", timeout=5) as response:
            assert response.status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(served["api_base"] + "/models", timeout=5)  # stopped after the block

    dies = Rounds(RoundsConfig(**base, serve={"command": f"{sys.executable} -c 'raise SystemExit(3)' {{info_file}}",
                                              "ready_timeout": 60}), tmp_path)
    with pytest.raises(UserError, match="exited with code 3 before writing"):
        with dies.served(tmp_path / "ckpt", log):
            pass
