"""Trajectory persistence at a constant per-step cost: an append-only step log during the run, the
`.traj` (SWE-agent's layout) written whole at the end, and assembled from the log when a killed run
is resumed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from sweagent_oec.data.trajectory import (
    TrajectoryWriter,
    load_trajectory,
    read_step_log,
    recover_trajectory,
    step_log_path,
)
from tests.agent_helpers import SOLUTION, write_replay
from tests.test_batch import CLI, instances_file, write_config


def loop_like_run(steps: int, elide_after: int = 5):
    """What the run loop hands the writer after each step: the history grows by two items; each
    step's query is the history then, with observations older than `elide_after` turns elided
    (a history processor), as new dicts each time."""
    history = [{"role": "system", "content": "sys " * 50}, {"role": "user", "content": "task " * 50}]
    all_steps = []
    for j in range(steps):
        query = []
        for i, item in enumerate(history):
            old_observation = item["role"] == "tool" and i < len(history) - 2 * elide_after
            query.append({**item, "content": "Old environment output: (30 lines omitted)"} if old_observation else dict(item))
        all_steps.append({"action": f"echo {j}", "observation": f"{j:04d}\n" * 30, "response": "", "thought": f"t{j}",
                          "execution_time": 0.01, "state": {}, "query": query, "extra_info": {}, "model_role": "expert",
                          "model_name": "m"})
        history = history + [{"role": "assistant", "content": f"t{j}", "thought": f"t{j}", "action": f"echo {j}"},
                             {"role": "tool", "content": f"{j:04d}\n" * 30, "tool_call_ids": [f"c{j}"]}]
        yield all_steps, history


def test_the_log_holds_every_step_and_the_end_writes_the_traj(tmp_path):
    path = tmp_path / "x" / "x.traj"
    writer = TrajectoryWriter(path)
    info = {"submission": None, "exit_status": None, "model_stats": {"api_calls": 0}}
    sizes = []
    for steps, history in loop_like_run(300):
        before = step_log_path(path).stat().st_size if step_log_path(path).exists() else 0
        info = {**info, "model_stats": {"api_calls": len(steps)}}
        writer.save(steps, history, info, {"agent": {}}, {"workdir": "/w"})
        sizes.append(step_log_path(path).stat().st_size - before)
        assert not path.exists()  # written once, at the end
    # Constant cost: what one step appends does not grow with the run (the 300th vs the 10th).
    assert sizes[299] <= 1.1 * sizes[9], (sizes[9], sizes[299])
    # The log alone gives back the whole trajectory, every query in full.
    logged = read_step_log(step_log_path(path))
    assert logged["trajectory"] == steps and logged["history"] == history and logged["info"] == info
    assert logged["environment"] == {"workdir": "/w"} and logged["replay_config"] == {"agent": {}}
    # The end: the .traj in SWE-agent's layout, and the log is gone.
    writer.save(steps, history, {**info, "exit_status": "submitted"}, {"agent": {}}, {"workdir": "/w"})
    data = json.loads(path.read_text())
    assert list(data) == ["trajectory", "history", "info", "replay_config", "environment"]
    assert data["trajectory"] == steps and data["history"] == history and data["info"]["exit_status"] == "submitted"
    assert load_trajectory(path).finished and not step_log_path(path).exists()
    # The log is linear in the run, the .traj (full query per step) is not.
    assert sum(sizes) * 5 < path.stat().st_size


def test_a_torn_last_line_loses_only_that_step(tmp_path):
    path = tmp_path / "t" / "t.traj"
    writer = TrajectoryWriter(path)
    for steps, history in loop_like_run(12):
        writer.save(steps, history, {"exit_status": None}, None, None)
    writer.close()
    log = step_log_path(path)
    text = log.read_bytes()
    log.write_bytes(text[:-40])  # a kill in the middle of the 12th line
    assert recover_trajectory(path)
    traj = load_trajectory(path)
    assert len(traj.trajectory) == 11 and not traj.finished and "after step 11" in traj.info.model_extra["interrupted"]
    assert [s.model_dump(exclude_none=True)["query"] for s in traj.trajectory] == [s["query"] for s in steps[:11]]
    assert not log.exists()
    # A log beside a finished .traj is stale (the run ended after writing it): removed, .traj kept.
    log.write_bytes(text)
    finished = path.read_bytes()
    assert not recover_trajectory(path) and not log.exists() and path.read_bytes() == finished


def test_a_new_run_starts_its_own_log(tmp_path):
    path = tmp_path / "r" / "r.traj"
    first = TrajectoryWriter(path)
    for steps, history in loop_like_run(5):
        first.save(steps, history, {"exit_status": None}, None, None)
    first.finish(steps, history, {"exit_status": "submitted"}, None, None)
    second = TrajectoryWriter(path)  # a redo: the old .traj goes at its first step
    for steps, history in loop_like_run(3):
        second.save(steps, history, {"exit_status": None}, None, None)
    assert not path.exists() and len(read_step_log(step_log_path(path))["trajectory"]) == 3


def test_sigkill_during_steps_then_resume_loses_and_redoes_nothing_finished(tmp_path):
    """A real batch (replay model, local runtime): killed while the second instance is stepping.
    The finished instance is not redone; the killed one's log is whole up to the kill, assembles
    into a valid unfinished .traj, and the rerun finishes it."""
    echoes = [{"thought": f"step {i}", "action": f"echo {i}"} for i in range(150)]
    replay = write_replay(tmp_path, echoes + [json.loads(line) for line in SOLUTION.read_text().splitlines()])
    config = write_config(tmp_path, {"agent": {"model": {"name": "replay", "replay_path": str(replay)}}})
    instances, out = instances_file(tmp_path, 2), tmp_path / "out"
    cmd = CLI + ["run-batch", "-c", str(config), "-i", str(instances), "-o", str(out), "--no-progress", "-w", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    second_log = step_log_path(out / "tiny-01" / "tiny-01.traj")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if second_log.exists() and second_log.read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = out / "tiny-00" / "tiny-00.traj"
    assert load_trajectory(first).finished
    first_bytes, first_mtime = first.read_bytes(), first.stat().st_mtime_ns
    assert not (out / "tiny-01" / "tiny-01.traj").exists()
    # Nothing corrupt: every complete line parses; the log replays into a loadable trajectory.
    lines = second_log.read_bytes().split(b"\n")
    assert all(json.loads(line) for line in lines[:-1])
    copy = tmp_path / "copy" / "tiny-01.traj"
    copy.parent.mkdir()
    shutil.copy(second_log, step_log_path(copy))
    assert recover_trajectory(copy)
    partial = load_trajectory(copy)
    assert len(partial.trajectory) >= 19 and not partial.finished
    assert [s.action for s in partial.trajectory[:19]] == [f"echo {i}" for i in range(19)]
    lengths = [len(s.query) for s in partial.trajectory]
    assert lengths == sorted(set(lengths)) and lengths[0] >= 2  # each step saw the one before it

    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert first.read_bytes() == first_bytes and first.stat().st_mtime_ns == first_mtime  # not redone
    second = load_trajectory(out / "tiny-01" / "tiny-01.traj")
    assert second.finished and second.info.submission and len(second.trajectory) >= 150
    assert not list(out.rglob("*.steps.jsonl"))
    preds = json.loads((out / "preds.json").read_text())
    assert preds["tiny-01"]["model_patch"] and preds["tiny-00"]["model_patch"]


def test_the_header_is_written_again_only_when_it_changes(tmp_path):
    path = tmp_path / "h" / "h.traj"
    writer = TrajectoryWriter(path)
    environment = {"workdir": "/w", "limits": {"max_processes": 64}}
    for j, (steps, history) in enumerate(loop_like_run(6)):
        if j == 3:
            environment = {**environment, "limits": {"max_processes": 128}}
        writer.save(steps, history, {"exit_status": None}, {"agent": {"x": 1}}, dict(environment))  # a new dict each time
    lines = [json.loads(line) for line in step_log_path(path).read_text().splitlines()]
    assert ["environment" in line for line in lines] == [True, False, False, True, False, False]
    assert read_step_log(step_log_path(path))["environment"]["limits"] == {"max_processes": 128}
