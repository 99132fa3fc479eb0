"""Iterated OEC rounds at tiny scale, with real parts: a tiny model trained in the test, served on
loopback by `transformers serve` as each round's student, real run-batch/eval/convert/train stages."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweagent_oec.tasks.instances import write_instances_jsonl
from tests.agent_helpers import SOLUTION, tinycalc

BIN = Path(sys.executable).parent


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def setup(tmp_path):
    pytest.importorskip("trl")
    if not (BIN / "transformers").exists():
        pytest.skip("no `transformers` command in this environment")
    from sweagent_oec.train.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "initial")
    base = tinycalc(tmp_path)
    write_instances_jsonl(tmp_path / "gen.jsonl", [base.model_copy(update={"instance_id": f"gen-{i}"}) for i in range(2)])
    write_instances_jsonl(tmp_path / "heldout.jsonl", [base.model_copy(update={"instance_id": "held-0"})])
    student = {"name": "hosted_vllm/placeholder", "api_base": "http://127.0.0.1:9/v1", "per_instance_cost_limit": 0,
               "total_cost_limit": 0, "retry": {"retries": 0}, "completion_kwargs": {"max_tokens": 8},
               "tools": {"parse_function": {"type": "xml_function_calling"}}}
    expert = {"name": "replay", "replay_path": str(SOLUTION), "tools": {"parse_function": {"type": "function_calling"}}}
    write_yaml(tmp_path / "switch.yaml", {"agent": {"model": {
        "name": "switching", "models": [student, expert], "seed": 0,
        "switching_criteria": {"type": "format_errors", "threshold": 1}}}})
    write_yaml(tmp_path / "student.yaml", {"agent": {"max_requeries": 2, "tools": {"parse_function": {"type": "xml_function_calling"}},
                                                     "model": {k: v for k, v in student.items() if k != "tools"}}})
    write_yaml(tmp_path / "rounds.yaml", {
        "output_dir": "out", "rounds": 2, "instances": "gen.jsonl", "heldout": "heldout.jsonl",
        "config": ["switch.yaml"], "student_config": ["student.yaml"], "initial_checkpoint": "initial", "workers": 2,
        "serve": {"command": f"{BIN / 'transformers'} serve {{checkpoint}} --host {{host}} --port {{port}} --device cpu",
                  "model": "hosted_vllm/{checkpoint}", "ready_timeout": 240, "env": {"HF_HUB_OFFLINE": "1"}},
        # The expert replays one solution, so every record is alike: keep them all to see each round's share.
        "convert_args": ["--no-dedup"],
        "train": {"args": ["--max-steps", "2", "--batch-size", "1", "--grad-accum", "1", "--fp32", "--max-length", "4096"]},
    })
    return tmp_path


def rounds(tmp_path, **kw):
    return subprocess.Popen([sys.executable, "-m", "sweagent_oec.cli", "rounds", "-c", str(tmp_path / "rounds.yaml")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


@pytest.mark.slow
def test_two_rounds_the_second_served_from_the_first_checkpoint_killed_and_resumed(setup):
    tmp_path = setup
    out = tmp_path / "out"
    # Kill the loop once round 2 has generated (mid-round), then rerun it.
    process = rounds(tmp_path)
    deadline = time.monotonic() + 900
    while not (out / "round_2" / ".done" / "generate").exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("round_*/.done/*")}
    assert {p.name for p in finished if p.parent.parent.name == "round_1"} >= {"generate", "eval", "convert", "train", "student_eval"}
    result = rounds(tmp_path)
    output, _ = result.communicate(timeout=900)
    assert result.returncode == 0, output
    # Nothing finished was redone.
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())

    rows = list(csv.DictReader((out / "rounds.csv").open()))
    assert [r["round"] for r in rows] == ["1", "2"]
    assert rows[0]["student_checkpoint"] == str(tmp_path / "initial")
    assert rows[1]["student_checkpoint"] == str(out / "round_1" / "checkpoint")
    assert rows[1]["heldout_total"] == "1" and rows[1]["heldout_ci_high"] != ""
    assert (out / "rounds.png").stat().st_size > 0
    # Round 2's student requests went to round 1's trained checkpoint, served the same way.
    log = (out / "round_2" / "serve_generate.log").read_text()
    assert f"Model: {out / 'round_1' / 'checkpoint'}" in log and f"Model: {tmp_path / 'initial'}" not in log
    traj = json.loads(next((out / "round_2" / "trajectories").glob("*/*.traj")).read_text())
    assert traj["info"]["oec"]["student_model"] == f"hosted_vllm/{out / 'round_1' / 'checkpoint'}"
    # Data from both rounds reached round 2's training.
    paths = [json.loads(line)["traj_path"] for line in (out / "round_2" / "sft" / "train.jsonl").read_text().splitlines()]
    assert any("/round_1/" in p for p in paths) and any("/round_2/" in p for p in paths)
    assert int(rows[1]["sft_records"]) == len(paths) == 4 and int(rows[1]["sft_records_this_round"]) == 2
    summary = json.loads((out / "round_2" / "checkpoint" / "oec_train_summary.json").read_text())
    assert summary  # round 2 trained


def test_bad_rounds_config_is_one_line(tmp_path):
    (tmp_path / "r.yaml").write_text("rounds: 0\nserve: {}\n")
    result = subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "rounds", "-c", str(tmp_path / "r.yaml")],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "rounds" in result.stderr and "Traceback" not in result.stderr


def test_shipped_rounds_configs_load_with_their_run_configs(monkeypatch):
    from sweagent_oec.config import load_config

    for name in ("ANTHROPIC_API_KEY", "STUDENT_API_BASE"):  # what the real setup's configs reference
        monkeypatch.setenv(name, "test")
    from sweagent_oec.rounds import Rounds, load_rounds_config

    shipped = sorted((Path(__file__).parent.parent / "config" / "rounds").glob("*.yaml"))
    assert shipped
    for path in shipped:
        config, base = load_rounds_config(path)
        rounds = Rounds(config, base)
        for group in (config.config, config.student_config or []):
            load_config([rounds._path(p) for p in group], [])
