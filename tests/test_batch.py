"""run-batch: resume after SIGKILL, faulty and dead model servers, reproducible switches, shards."""

import json
import re
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from sweagent_oec.batch import shard
from sweagent_oec.data.trajectory import find_trajectories, load_trajectory
from sweagent_oec.errors import UserError
from sweagent_oec.harness.predictions import load_predictions
from sweagent_oec.models.switching import draw_switch_step
from sweagent_oec.tasks.instances import write_instances_jsonl
from tests.agent_helpers import SOLUTION, switching_config, tinycalc, write_replay
from tests.openai_server import OpenAIServer, Reply, tool_call

CLI = [sys.executable, "-m", "sweagent_oec.cli"]


def instances_file(tmp_path, n):
    base = tinycalc(tmp_path)
    path = tmp_path / "instances.jsonl"
    write_instances_jsonl(path, [base.model_copy(update={"instance_id": f"tiny-{i:02d}"}) for i in range(n)])
    return path


def write_config(tmp_path, data, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def run_batch(tmp_path, config, instances, out, *extra, check=True, **kw):
    cmd = CLI + ["run-batch", "-c", str(config), "-i", str(instances), "-o", str(out), "--no-progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, cwd=tmp_path, **kw)


def replay_switching(tmp_path, start=1, end=3, seed=5):
    student = write_replay(tmp_path, [{"thought": "", "action": f"echo s{i}"} for i in range(8)], "student.jsonl")
    side = lambda p: {"name": "replay", "replay_path": str(p)}  # noqa: E731
    return write_config(tmp_path, switching_config(side(student), side(SOLUTION),
                                                   {"type": "random_step_range", "start_step": start, "end_step": end}, seed=seed))


def switch_steps(out):
    return {p.parent.name: load_trajectory(p).info.oec.switch_step for p in find_trajectories(out)}


def test_same_seed_same_switch_steps_across_runs_and_worker_counts(tmp_path):
    config, instances = replay_switching(tmp_path), instances_file(tmp_path, 6)
    run_batch(tmp_path, config, instances, tmp_path / "w1", "-w", "1")
    run_batch(tmp_path, config, instances, tmp_path / "w3", "-w", "3")
    one, three = switch_steps(tmp_path / "w1"), switch_steps(tmp_path / "w3")
    assert one == three and len(one) == 6
    assert one == {iid: draw_switch_step(5, iid, 1, 3) for iid in one}
    assert len(set(one.values())) > 1  # the draw really varies per instance
    preds = load_predictions(tmp_path / "w3" / "preds.json")
    assert set(preds) == set(one) and all("len(values)" in p.model_patch for p in preds.values())
    statuses = yaml.safe_load((tmp_path / "w3" / "run_batch_exit_statuses.yaml").read_text())
    assert statuses == {"submitted": sorted(one)}


def test_sigkill_then_resume_finishes_every_instance_exactly_once(tmp_path):
    slow = write_replay(tmp_path, [{"thought": "", "action": "sleep 0.4"}] * 3 + [{"thought": "", "action": "submit"}], "slow.jsonl")
    config = write_config(tmp_path, {"agent": {"model": {"name": "replay", "replay_path": str(slow)}}})
    instances = instances_file(tmp_path, 8)
    out = tmp_path / "out"
    cmd = CLI + ["run-batch", "-c", str(config), "-i", str(instances), "-o", str(out), "--no-progress", "-w", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(load_predictions(out / "preds.json") if (out / "preds.json").exists() else {}) < 2:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = load_predictions(out / "preds.json")
    assert 2 <= len(before) < 8
    mtimes = {p.parent.name: p.stat().st_mtime for p in find_trajectories(out) if p.parent.name in before}
    result = run_batch(tmp_path, config, instances, out, "-w", "2")
    assert f"{len(before)} already done" in result.stdout
    trajs = find_trajectories(out)
    assert len(trajs) == 8
    for p in trajs:
        traj = load_trajectory(p)  # none is corrupt
        assert traj.info.exit_status == "submitted" and len(traj.trajectory) == 4
    assert all(p.stat().st_mtime == mtimes[p.parent.name] for p in trajs if p.parent.name in mtimes)  # not redone
    preds = load_predictions(out / "preds.json")
    assert set(preds) == {p.parent.name for p in trajs}
    assert all(preds[p.parent.name].model_patch == load_trajectory(p).info.submission for p in trajs)


def test_flaky_server_still_completes_twenty_instances(tmp_path):
    import random

    rng = random.Random(0)
    counter = {"n": 0}

    def answer(request):
        counter["n"] += 1
        roll = rng.random()
        if roll < 0.1:
            return Reply(status=429)
        if roll < 0.2:
            return Reply(status=500)
        if roll < 0.3:
            return Reply(delay=3.0, content="late")  # client timeout below is 1 s
        done = sum(m["role"] == "assistant" for m in request["messages"]) >= 2
        return Reply(content="", tool_calls=[tool_call("submit", {}) if done else tool_call("bash", {"command": "echo hi"})])

    with OpenAIServer(answer) as server:
        config = write_config(tmp_path, {"agent": {"model": {
            "name": "openai/flaky", "api_base": server.url, "api_key": "k", "timeout": 1, "per_instance_cost_limit": 0,
            "retry": {"retries": 8, "min_wait": 0.05, "max_wait": 0.2}}}})
        run_batch(tmp_path, config, instances_file(tmp_path, 20), tmp_path / "out", "-w", "8", timeout=300)
    statuses = yaml.safe_load((tmp_path / "out" / "run_batch_exit_statuses.yaml").read_text())
    assert statuses == {"submitted": [f"tiny-{i:02d}" for i in range(20)]}


def test_server_down_gives_each_instance_exit_api(tmp_path):
    config = write_config(tmp_path, {"agent": {"model": {
        "name": "openai/down", "api_base": "http://127.0.0.1:9/v1", "api_key": "k", "timeout": 2, "per_instance_cost_limit": 0,
        "retry": {"retries": 1, "min_wait": 0.01, "max_wait": 0.01}}}})
    result = run_batch(tmp_path, config, instances_file(tmp_path, 3), tmp_path / "out", "-w", "3")
    statuses = yaml.safe_load((tmp_path / "out" / "run_batch_exit_statuses.yaml").read_text())
    assert statuses == {"exit_api": ["tiny-00", "tiny-01", "tiny-02"]}
    assert re.search(r"^exit_api +3$", result.stdout, re.M)  # the end-of-batch exit-status table


def test_environment_failure_is_recorded_and_the_batch_goes_on(tmp_path):
    base = tinycalc(tmp_path)
    broken = base.model_copy(update={"instance_id": "broken", "local": base.local.model_copy(update={"repo_dir": str(tmp_path / "nope")})})
    path = tmp_path / "instances.jsonl"
    write_instances_jsonl(path, [broken, base])
    config = write_config(tmp_path, {"agent": {"model": {"name": "replay", "replay_path": str(SOLUTION)}}})
    run_batch(tmp_path, config, path, tmp_path / "out")
    statuses = yaml.safe_load((tmp_path / "out" / "run_batch_exit_statuses.yaml").read_text())
    assert statuses == {"exit_environment_error": ["broken"], "submitted": [base.instance_id]}
    assert "nope" in load_trajectory(tmp_path / "out/broken/broken.traj").info.exit_reason
    # An environment error is the infrastructure's: a rerun redoes it (and only it), unless kept.
    rerun = run_batch(tmp_path, config, path, tmp_path / "out")
    assert "1 run, 1 already done" in rerun.stdout
    kept = run_batch(tmp_path, config, path, tmp_path / "out", "--keep-errors")
    assert "0 run, 2 already done" in kept.stdout


def test_shards_partition_the_list():
    items = list(range(10))
    parts = [shard(items, f"{i}/3") for i in range(3)]
    assert sorted(sum(parts, [])) == items and parts[0] == [0, 3, 6, 9]
    with pytest.raises(UserError):
        shard(items, "3/3")


def test_merge_shards_cli(tmp_path):
    config, instances = replay_switching(tmp_path), instances_file(tmp_path, 4)
    for i in range(2):
        run_batch(tmp_path, config, instances, tmp_path / f"shard{i}", "--shard", f"{i}/2")
    out = tmp_path / "preds.json"
    subprocess.run(CLI + ["merge-preds", str(tmp_path / "shard0"), str(tmp_path / "shard1"), "--output", str(out)], check=True)
    assert sorted(json.loads(out.read_text())) == [f"tiny-{i:02d}" for i in range(4)]


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path):
    slow = write_replay(tmp_path, [{"thought": "", "action": "sleep 0.5"}] * 4 + [{"thought": "", "action": "submit"}], "slow.jsonl")
    config = write_config(tmp_path, {"agent": {"model": {"name": "replay", "replay_path": str(slow)}}})
    instances, out = instances_file(tmp_path, 6), tmp_path / "out"
    cmd = CLI + ["run-batch", "-c", str(config), "-i", str(instances), "-o", str(out), "--no-progress", "-w", "2"]
    # SIGINT at its default in the child: a suite started in the background (`cmd &`) has it ignored,
    # and an ignored SIGINT is inherited, so Ctrl-C would never reach run-batch.
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and len(load_predictions(out / "preds.json") if (out / "preds.json").exists() else {}) < 1:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "interrupted" in stderr
    done = load_predictions(out / "preds.json")
    for path in find_trajectories(out):  # finished ones are kept; interrupted ones say they did not finish
        traj = load_trajectory(path)
        assert (traj.info.exit_status == "submitted") == (path.parent.name in done)
    assert 1 <= len(done) < 6
    run_batch(tmp_path, config, instances, out, "-w", "2")
    assert len(load_predictions(out / "preds.json")) == 6


def test_total_cost_limit_stops_new_work_and_running_instances_autosubmit(tmp_path):
    def answer(request):
        n = sum(m["role"] == "assistant" for m in request["messages"])
        return Reply(content="", tool_calls=[tool_call("bash", {"command": f"echo {n} >> calc.py"})], prompt_tokens=1_000_000)

    with OpenAIServer(answer) as server:
        config = write_config(tmp_path, {"agent": {"model": {
            "name": "openai/priced", "api_base": server.url, "api_key": "k", "price_per_million_tokens": [1.0, 0.0],
            "per_instance_cost_limit": 0, "total_cost_limit": 2.5}}})
        result = run_batch(tmp_path, config, instances_file(tmp_path, 4), tmp_path / "out", "-w", "1")
    statuses = yaml.safe_load((tmp_path / "out" / "run_batch_exit_statuses.yaml").read_text())
    # The first instance spends the budget (3 calls, $3) and autosubmits its diff; no other instance starts.
    assert statuses == {"submitted (exit_cost)": ["tiny-00"]}, (statuses, result.stderr)
    assert len(server.requests) == 3
    assert "total_cost_limit" in result.stderr
