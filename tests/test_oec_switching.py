"""The switching model end to end: the switch lands at the drawn step and every turn names its author."""

import json

import pytest

from sweagent_oec.config import build_config
from sweagent_oec.data.trajectory import load_trajectory
from sweagent_oec.models.switching import draw_switch_step
from sweagent_oec.runner import run_instance
from tests.agent_helpers import SOLUTION, switching_config, tinycalc, write_replay
from tests.openai_server import OpenAIServer, Reply, tool_call


def student_replay(tmp_path, n=10):
    return write_replay(tmp_path, [{"thought": f"student {i}", "action": f"echo student-{i}"} for i in range(n)], "student.jsonl")


def replay_side(path, style="function_calling"):
    return {"name": "replay", "replay_path": str(path), "tools": {"parse_function": {"type": style}}}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_switch_lands_exactly_at_the_drawn_step(tmp_path, seed):
    instance = tinycalc(tmp_path)
    data = switching_config(replay_side(student_replay(tmp_path)), replay_side(SOLUTION),
                            {"type": "random_step_range", "start_step": 1, "end_step": 4}, seed=seed)
    path, info = run_instance(build_config(data), instance, tmp_path / "out")
    drawn = draw_switch_step(seed, instance.instance_id, 1, 4)
    traj = load_trajectory(path)
    assert info["exit_status"] == "submitted"
    assert traj.roles() == ["student"] * drawn + ["expert"] * 5  # the solution's 5 steps, submit included
    assert [s.action for s in traj.trajectory[:drawn]] == [f"echo student-{i}" for i in range(drawn)]
    oec = traj.info.oec
    assert oec.switch_step == drawn and oec.switched and oec.drawn_threshold == drawn and oec.seed == seed
    assert oec.model_stats["student"].api_calls == drawn and oec.model_stats["expert"].api_calls == 5
    assert [h.model_role for h in traj.history if h.role == "assistant"] == traj.roles()


def test_draw_of_zero_is_all_expert(tmp_path):
    data = switching_config(replay_side(student_replay(tmp_path)), replay_side(SOLUTION),
                            {"type": "step_count", "threshold": 0})
    path, info = run_instance(build_config(data), tinycalc(tmp_path), tmp_path / "out")
    traj = load_trajectory(path)
    assert set(traj.roles()) == {"expert"} and traj.info.oec.switch_step == 0


def test_student_that_submits_first_leaves_a_student_only_trajectory(tmp_path):
    data = switching_config(replay_side(SOLUTION), replay_side(student_replay(tmp_path)),
                            {"type": "step_count", "threshold": 50})
    path, info = run_instance(build_config(data), tinycalc(tmp_path), tmp_path / "out")
    traj = load_trajectory(path)
    assert info["exit_status"] == "submitted" and set(traj.roles()) == {"student"}
    assert traj.info.oec.switch_step is None and traj.info.oec.switched is False
    assert json.loads(path.read_text())["info"]["oec"]["switch_step"] is None  # said explicitly


@pytest.mark.parametrize("count, expected_student_steps", [(True, 1), (False, 2)])
def test_format_error_requeries_count_as_steps_per_flag(tmp_path, count, expected_student_steps):
    student = write_replay(tmp_path, ["malformed", {"thought": "", "action": "echo a"}, {"thought": "", "action": "echo b"},
                                      {"thought": "", "action": "echo c"}], "student.jsonl")
    data = switching_config(replay_side(student), replay_side(SOLUTION), {"type": "step_count", "threshold": 2},
                            count_format_errors_as_steps=count)
    path, _ = run_instance(build_config(data), tinycalc(tmp_path), tmp_path / "out")
    assert load_trajectory(path).roles().count("student") == expected_student_steps


def test_xml_student_hands_over_to_a_tool_calling_expert(tmp_path):
    """The expert's first request carries the student's turns as well-formed tool_calls + tool messages."""

    def answer(request):
        if request["model"] == "student":
            n = sum(m["role"] == "assistant" for m in request["messages"])
            return Reply(content=f"Looking around.\n<function=bash>\n<parameter=command>echo s{n}</parameter>\n</function>")
        done = any(m["role"] == "assistant" and m.get("tool_calls") and "cat" in m["tool_calls"][0]["function"]["arguments"]
                   for m in request["messages"])
        call = tool_call("submit", {}) if done else tool_call("bash", {"command": "cat calc.py"})
        return Reply(content="Expert here.", tool_calls=[call])

    with OpenAIServer(answer) as server:
        common = {"api_base": server.url, "api_key": "k", "retry": {"retries": 0}, "per_instance_cost_limit": 0}
        student = {"name": "openai/student", **common, "tools": {"parse_function": {"type": "xml_function_calling"}},
                   "history_processors": [{"type": "last_n_observations", "n": 1}]}
        expert = {"name": "openai/expert", **common, "tools": {"parse_function": {"type": "function_calling"}}}
        data = switching_config(student, expert, {"type": "step_count", "threshold": 3})
        path, info = run_instance(build_config(data), tinycalc(tmp_path), tmp_path / "out")

    student_requests = [r for r in server.requests if r["model"] == "student"]
    assert len(student_requests) == 3 and "tools" not in student_requests[0]
    assert "<function=" in student_requests[0]["messages"][0]["content"]  # XML tool docs in the system prompt
    first_expert = next(r for r in server.requests if r["model"] == "expert")
    assert first_expert["tools"] and "BEGIN FUNCTION" not in first_expert["messages"][0]["content"]
    turns = first_expert["messages"][2:]
    assert [m["role"] for m in turns] == ["assistant", "tool"] * 3
    for call_message, result in zip(turns[::2], turns[1::2]):
        (call,) = call_message["tool_calls"]
        assert call["function"]["name"] == "bash" and json.loads(call["function"]["arguments"])["command"].startswith("echo s")
        assert result["tool_call_id"] == call["id"]
    # Full observations for the expert (no elision), although the student saw only the last one.
    assert all("omitted" not in m["content"] for m in turns[1::2])
    assert "omitted" in json.dumps(student_requests[2]["messages"])
    traj = load_trajectory(path)
    assert traj.roles() == ["student"] * 3 + ["expert"] * 2 and info["exit_status"] == "submitted"
    assert traj.info.oec.student_model == "openai/student" and traj.info.oec.expert_model == "openai/expert"


def test_tool_student_hands_over_to_an_xml_expert(tmp_path):
    student = write_replay(tmp_path, [{"thought": "s", "action": "str_replace_editor view /testbed/calc.py"},
                                      {"thought": "s", "action": "echo hi"}], "student.jsonl")
    seen = []

    def answer(request):
        seen.append(request)
        return Reply(content="Done.\n<function=submit>\n</function>")

    with OpenAIServer(answer) as server:
        expert = {"name": "openai/expert", "api_base": server.url, "api_key": "k", "per_instance_cost_limit": 0,
                  "tools": {"parse_function": {"type": "xml_function_calling"}}}
        data = switching_config(replay_side(student), expert, {"type": "step_count", "threshold": 2})
        run_instance(build_config(data), tinycalc(tmp_path), tmp_path / "out")
    turns = seen[0]["messages"][2:]
    assert [m["role"] for m in turns] == ["assistant", "user"] * 2
    assert "<function=str_replace_editor>" in turns[0]["content"] and "<parameter=path>/testbed/calc.py</parameter>" in turns[0]["content"]
    assert "tool_calls" not in turns[0] and "hi" in turns[3]["content"]


def test_expert_takes_over_during_a_students_malformed_replies(tmp_path):
    """With format errors counted as steps, a student that never writes a valid action still hands over."""
    student = write_replay(tmp_path, ["garbage"] * 10, "student.jsonl")
    data = switching_config(replay_side(student), replay_side(SOLUTION), {"type": "step_count", "threshold": 2})
    path, info = run_instance(build_config(data), tinycalc(tmp_path), tmp_path / "out")
    traj = load_trajectory(path)
    assert info["exit_status"] == "submitted" and set(traj.roles()) == {"expert"}
    errors = traj.trajectory[0].extra_info["format_errors"]
    assert [e["model_role"] for e in errors] == ["student", "student"]
    assert traj.info.oec.switch_step == 0 and traj.info.oec.model_stats["student"].api_calls == 2


def test_the_expert_brings_its_own_tool_settings_into_the_session(tmp_path):
    """Tool settings are the acting model's: the student views a large .py file in full and sees its
    env_variables; after the switch the expert gets the file map (USE_FILEMAP) and its own variables."""
    big = "".join(f"def f{i}(x):\n" + "".join(f"    x += {j}  # {'pad ' * 8}\n" for j in range(8)) + "    return x\n\n"
                  for i in range(60))
    make = {"thought": "", "action": f"cat > /testbed/big.py <<'EOF'\n{big}EOF"}
    view = {"thought": "", "action": "str_replace_editor view /testbed/big.py"}
    env = {"thought": "", "action": "echo \"who=$OEC_WHO only=${OEC_STUDENT_ONLY:-unset}\""}
    student = write_replay(tmp_path, [make, view, env], "student.jsonl")
    expert = write_replay(tmp_path, [view, env, {"thought": "", "action": "submit"}], "expert.jsonl")
    side = lambda path, tools: {"name": "replay", "replay_path": str(path), "tools": tools}  # noqa: E731
    data = switching_config(
        side(student, {"env_variables": {"OEC_WHO": "student", "OEC_STUDENT_ONLY": "1"}}),
        side(expert, {"bundles": ["tools/registry", "tools/edit_anthropic", "tools/submit"], "env_variables": {"OEC_WHO": "expert"},
                      "registry_variables": {"USE_FILEMAP": "true"}}),
        {"type": "step_count", "threshold": 3})
    path, info = run_instance(build_config(data), tinycalc(tmp_path), tmp_path / "out")
    steps = load_trajectory(path).trajectory
    assert [s.model_role for s in steps] == ["student"] * 3 + ["expert"] * 3
    assert "eliding" not in steps[1].observation and "<response clipped>" in steps[1].observation
    assert steps[2].observation.strip() == "who=student only=1"
    assert "... eliding lines 2-10 ..." in steps[3].observation
    assert steps[4].observation.strip() == "who=expert only=1"  # exports persist in the session; the expert's win
