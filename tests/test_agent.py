"""The run loop end to end on the real local runtime with the bundled task."""

import json

import pytest

from sweagent_oec.config import build_config
from sweagent_oec.data.trajectory import find_trajectories, load_trajectory
from sweagent_oec.runner import run_instance
from tests.agent_helpers import SOLUTION, replay_config, tinycalc, write_replay
from tests.openai_server import OpenAIServer, Reply, tool_call

FIXTURES = sorted((__import__("pathlib").Path(__file__).parent / "data/fixtures/swe_agent_traj").glob("*.traj"))


@pytest.mark.parametrize("style", ["function_calling", "xml_function_calling", "thought_action"])
def test_replay_solves_the_bundled_task(tmp_path, style):
    path, info = run_instance(replay_config(SOLUTION, style), tinycalc(tmp_path), tmp_path / "out")
    assert info["exit_status"] == "submitted"
    assert "-    return sum(values) / (len(values) + 1)" in info["submission"]
    traj = load_trajectory(path)
    assert "5 passed" in traj.trajectory[-2].observation
    assert traj.trajectory[-1].action == "submit" and traj.trajectory[-1].observation == info["submission"]
    assert traj.info.model_stats.api_calls == 5
    assert traj.history[0].role == "system" and traj.history[1].role == "user"
    assert all(h.model_name == "replay" for h in traj.history if h.role == "assistant")
    assert traj.environment["type"] == "local"


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_swe_agent_fixtures_load_and_replay(tmp_path, fixture):
    traj = load_trajectory(fixture)
    assert traj.history and traj.history[0].role == "system"
    # SWE-agent 0.x's multi-line `edit ... end_of_edit` commands are not bash (SWE-agent wraps them in a
    # heredoc before its syntax check): replayed verbatim, they would be re-queried, so the check is off.
    config = replay_config(fixture, "thought_action", tools={"parse_function": {"type": "thought_action"},
                                                             "execution_timeout": 5, "check_bash_syntax": False})
    path, info = run_instance(config, tinycalc(tmp_path), tmp_path / "out")
    replayed = load_trajectory(path)
    actions = [s.action for s in traj.trajectory] or [h.action for h in traj.history if h.role == "assistant"]
    replayed_actions = [s.action for s in replayed.trajectory]
    assert replayed_actions == actions[: len(replayed_actions)] and replayed_actions[-1].strip() == "submit"
    assert info["exit_status"].startswith("submitted")


def test_format_errors_are_requeried_and_kept_out_of_the_history(tmp_path):
    good = {"content": "", "tool_calls": [tool_call("submit", {})]}
    replay = write_replay(tmp_path, ["no tool call here", {"content": "two", "tool_calls": [tool_call("bash", {"command": "ls"})] * 2},
                                     {"thought": "look", "action": "ls"}, good])
    path, info = run_instance(replay_config(replay), tinycalc(tmp_path), tmp_path / "out")
    traj = load_trajectory(path)
    assert info["exit_status"] == "submitted"
    assert len(traj.trajectory) == 2  # ls, then submit
    errors = traj.trajectory[0].extra_info["format_errors"]
    assert [e["response"] for e in errors] == ["no tool call here", "two"]
    assert not any("no tool call here" in str(h.content) for h in traj.history)
    # The model saw its failed attempt and the error message on the re-query.
    assert traj.trajectory[0].query[-2]["is_format_error"] is True


def test_too_many_format_errors_end_with_exit_format_and_autosubmit(tmp_path):
    replay = write_replay(tmp_path, [{"thought": "edit", "action": "echo x >> calc.py"}] + ["bad"] * 4)
    path, info = run_instance(replay_config(replay), tinycalc(tmp_path), tmp_path / "out")
    assert info["exit_status"] == "submitted (exit_format)"
    assert "+x" in info["submission"]
    assert len(load_trajectory(path).info.format_errors) == 3  # agent.max_requeries: 3 replies in all, as in SWE-agent


def test_command_timeout_observation_then_limit(tmp_path):
    replay = write_replay(tmp_path, [{"thought": "", "action": "sleep 30"}] * 3)
    config = replay_config(replay, tools={"execution_timeout": 1, "max_consecutive_execution_timeouts": 2})
    path, info = run_instance(config, tinycalc(tmp_path), tmp_path / "out")
    traj = load_trajectory(path)
    assert "took more than 1 seconds" in traj.trajectory[0].observation
    assert info["exit_status"] == "exit_command_timeout"


def test_litellm_agent_over_loopback_with_context_exit_and_no_secret_in_output(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret-0123456789abcdef")
    script = [Reply(content="edit", tool_calls=[tool_call("bash", {"command": "echo '# note' >> calc.py; env | grep -c API_KEY"})]),
              Reply(status=400, error_code="context_length_exceeded", error_message="maximum context length is 100 tokens")]
    with OpenAIServer(script) as server:
        config = build_config({"agent": {"model": {"name": "openai/test-model", "api_base": server.url,
                                                   "api_key": "$OPENAI_API_KEY", "retry": {"retries": 0},
                                                   "per_instance_cost_limit": 0}}})
        path, info = run_instance(config, tinycalc(tmp_path), tmp_path / "out")
    assert info["exit_status"] == "submitted (exit_context)"
    traj = load_trajectory(path)
    assert traj.trajectory[0].observation.strip() == "0"  # no *_API_KEY inside the session
    assert traj.replay_config["agent"]["model"]["api_key"] == "$OPENAI_API_KEY"
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file():
            assert "sk-host-secret" not in f.read_text()
    # The tool call and its result were sent back as tool_calls / tool messages.
    second = server.requests[1]["messages"]
    assert second[2]["tool_calls"][0]["function"]["name"] == "bash" and second[3]["role"] == "tool"


def test_trajectory_is_valid_json_after_every_step(tmp_path):
    replay = write_replay(tmp_path, [{"thought": "", "action": f"echo {i}"} for i in range(5)] + [{"thought": "", "action": "submit"}])
    path, _ = run_instance(replay_config(replay), tinycalc(tmp_path), tmp_path / "out")
    data = json.loads(path.read_text())
    assert len(data["trajectory"]) == 6 and find_trajectories(tmp_path / "out") == [path]


def test_cli_bad_inputs_are_one_line(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text("agent:\n  model:\n    name: replay\n    replay_path: x.jsonl\n")
    fixture = __import__("pathlib").Path(__file__).parent / "data/fixtures/swesmith/instance.pandas-dev__pandas.95280573.pr_53652.json"
    cases = [
        (["--instances", str(fixture), "--instance-id", "nope"], "no instance 'nope' in"),
        (["--bundled", "agent.model.temprature=1"], "unknown config key agent.model.temprature"),
        (["--bundled", "agent.model.api_key=$OEC_UNSET_VAR"], "$OEC_UNSET_VAR, which is not set"),
        (["--bundled", "agent.tools.execution_timeout=soon"], "agent.tools.execution_timeout"),
    ]
    for extra, message in cases:
        result = subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "run", "-c", str(config), *extra],
                                capture_output=True, text=True, cwd=tmp_path)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (extra, result.stderr)
