"""k expert corrections from one student rollout: one student run, one trajectory per branch point."""

import json
import subprocess
import sys

import pytest

from sweagent_oec.batch import BatchRun
from sweagent_oec.branching import rollout_path
from sweagent_oec.config import build_config
from sweagent_oec.data.trajectory import instance_id_of, load_trajectory, trajectory_path
from sweagent_oec.harness.predictions import load_predictions
from sweagent_oec.tasks.instances import write_instances_jsonl
from tests.agent_helpers import SOLUTION, switching_config, tinycalc
from tests.openai_server import OpenAIServer, Reply, tool_call


def student_server(commands):
    """A student whose reply depends only on how many steps it has taken (the assistant turns it is shown)."""
    def handler(request):
        step = sum(1 for m in request["messages"] if m["role"] == "assistant")
        return Reply(content=f"step {step}", tool_calls=[tool_call("bash", {"command": commands(step)})])
    return OpenAIServer(handler)


def config(server, criteria):
    student = {"name": "openai/student", "api_base": server.url, "api_key": "sk-local-student",
               "per_instance_cost_limit": 0, "total_cost_limit": 0, "retry": {"retries": 0},
               "tools": {"parse_function": {"type": "function_calling"}}}
    expert = {"name": "replay", "replay_path": str(SOLUTION), "tools": {"parse_function": {"type": "function_calling"}}}
    return build_config(switching_config(student, expert, criteria, seed=0))


def run(tmp_path, server, criteria, out="out"):
    instance = tinycalc(tmp_path)
    state = BatchRun(config(server, criteria), [instance], tmp_path / out).run(progress=False)
    return instance, state


def same_step(a, b):
    return (a.action, a.thought, a.observation, a.response, a.model_role) == (b.action, b.thought, b.observation, b.response, b.model_role)


def test_three_branches_from_one_rollout(tmp_path):
    with student_server(lambda i: f"echo student-{i} && ls") as server:
        instance, state = run(tmp_path, server, {"type": "branches", "steps": [1, 3, 5]})
        # The student answered once per step of the one rollout, and never for a branch.
        assert len(server.requests) == 5
        iid = instance.instance_id
        rollout = load_trajectory(rollout_path(tmp_path / "out", iid))
        assert len(rollout.trajectory) == 5 and set(rollout.roles()) == {"student"}
        preds = load_predictions(tmp_path / "out" / "preds.json")
        assert sorted(preds) == sorted(f"{iid}__b{s}" for s in (1, 3, 5))
        for s in (1, 3, 5):
            path = trajectory_path(tmp_path / "out", f"{iid}__b{s}")
            assert instance_id_of(path) == iid
            traj = load_trajectory(path)
            assert traj.roles() == ["student"] * s + ["expert"] * 5
            assert all(same_step(a, b) for a, b in zip(traj.trajectory[:s], rollout.trajectory[:s]))
            assert traj.trajectory[s].model_role == "expert"
            oec = json.loads(path.read_text())["info"]["oec"]
            assert oec["switch_step"] == s and oec["criterion"] == {"type": "branches", "steps": [1, 3, 5]}
            assert oec["branch"]["branch_step"] == s and oec["branch"]["replay_diverged"] is False
            assert oec["branch"]["replayed_steps"] == s and oec["branch"]["source_rollout"].endswith(".rollout.json")
            assert traj.info.exit_status == "submitted"
        # A second run redoes nothing and calls no model.
        _, again = run(tmp_path, server, {"type": "branches", "steps": [1, 3, 5]})
        assert again.skipped == 3 and again.done == 0 and len(server.requests) == 5
    # Each branch is graded as an instance of its own, against its task's tests.
    write_instances_jsonl(tmp_path / "instances.jsonl", [instance])
    subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "eval", "--instances", str(tmp_path / "instances.jsonl"),
                    "--predictions", str(tmp_path / "out" / "preds.json"), "--run-id", "b", "--output-dir", str(tmp_path / "logs")],
                   check=True, capture_output=True, cwd=tmp_path)
    report = json.loads((tmp_path / "logs" / "b" / "report.json").read_text())
    assert report["ids_resolved"] == sorted(f"{iid}__b{s}" for s in (1, 3, 5))


def test_nondeterministic_prefix_marks_the_branch_diverged_and_runs_the_student_live(tmp_path):
    commands = {1: "python -c 'import time; print(time.time_ns())'"}
    with student_server(lambda i: commands.get(i, f"echo student-{i}")) as server:
        instance, _ = run(tmp_path, server, {"type": "branches", "steps": [3]})
        rollout_calls = 3
        # Step 2's input differs (step 1 printed another time), so step 2 was asked live.
        assert len(server.requests) == rollout_calls + 1
    path = trajectory_path(tmp_path / "out", f"{instance.instance_id}__b3")
    traj = load_trajectory(path)
    oec = json.loads(path.read_text())["info"]["oec"]
    assert oec["branch"]["replay_diverged"] is True and oec["branch"]["diverged_at"] == 2
    assert oec["switch_step"] == 3 and traj.roles() == ["student"] * 3 + ["expert"] * 5
    assert traj.info.exit_status == "submitted"
    assert traj.trajectory[2].extra_info.get("replayed_from") is None  # asked live
    assert oec["model_stats"]["student"]["api_calls"] == 1  # the one live call is counted, the replayed ones are free
    assert traj.trajectory[0].extra_info.get("replayed_from")


def test_branch_points_past_the_students_submission_are_skipped(tmp_path):
    commands = {2: "submit"}
    with student_server(lambda i: commands.get(i, f"echo student-{i}")) as server:
        instance, state = run(tmp_path, server, {"type": "branches", "steps": [0, 2, 6]})
    iid = instance.instance_id
    data = json.loads(rollout_path(tmp_path / "out", iid).read_text())
    assert data["branching"]["branches"] == [0, 2] and data["branching"]["skipped"] == [6]
    assert sorted(load_predictions(tmp_path / "out" / "preds.json")) == [f"{iid}__b0", f"{iid}__b2"]
    assert set(load_trajectory(trajectory_path(tmp_path / "out", f"{iid}__b0")).roles()) == {"expert"}


def test_k_draws_distinct_steps_reproducibly(tmp_path):
    from sweagent_oec.config import SwitchingCriteria
    from sweagent_oec.models.switching import draw_branch_steps

    criteria = SwitchingCriteria(type="branches", k=3, start_step=0, end_step=10)
    draws = draw_branch_steps(criteria, 0, "a")
    assert len(set(draws)) == 3 and draws == sorted(draws) and all(0 <= d <= 10 for d in draws)
    assert draws == draw_branch_steps(criteria, 0, "a") and any(draw_branch_steps(criteria, s, "a") != draws for s in range(1, 5))


def test_a_malformed_reply_in_the_rollout_is_re_queried_not_an_error(tmp_path):
    # The rollout runs the student with no schedule; its re-query path once read the schedule's
    # count_format_errors and ended the rollout in exit_error.
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 2:
            return Reply(content="no action here")
        step = sum(1 for m in request["messages"] if m["role"] == "assistant")
        return Reply(content=f"step {step}", tool_calls=[tool_call("bash", {"command": f"echo s{step}"})])

    with OpenAIServer(handler) as server:
        instance, state = run(tmp_path, server, {"type": "branches", "steps": [1, 2]})
    rollout = load_trajectory(rollout_path(tmp_path / "out", instance.instance_id))
    assert rollout.info.exit_status != "exit_error" and len(rollout.trajectory) == 2
    for s in (1, 2):
        traj = load_trajectory(trajectory_path(tmp_path / "out", f"{instance.instance_id}__b{s}"))
        assert traj.roles() == ["student"] * s + ["expert"] * 5 and traj.info.exit_status == "submitted"
