"""SWE-agent's re-query policy and the paper's expert tools, against a loopback OpenAI server on a real task.

Re-query: a reply that cannot be parsed, a blocklisted command, or bash that does not parse is not run;
the model is asked again, seeing only its last failed reply and that rule's own error message; a step
gets `agent.max_requeries` replies in all. Review-on-submit: the first submit shows the diff and a
review message, the next one submits. File map: `str_replace_editor view` of a large .py file.
"""

from __future__ import annotations

import json

import pytest

from sweagent_oec.config import build_config, load_config
from sweagent_oec.data.trajectory import load_trajectory
from sweagent_oec.errors import UserError
from sweagent_oec.runner import run_instance
from tests.agent_helpers import tinycalc
from tests.openai_server import OpenAIServer, Reply, tool_call


def bash(command: str, thought: str = "") -> Reply:
    return Reply(content=thought, tool_calls=[tool_call("bash", {"command": command})])


def submit() -> Reply:
    return Reply(content="", tool_calls=[tool_call("submit", {})])


def run(tmp_path, script, tools=None, templates=None, **agent):
    """One run of the bundled task with a function-calling model served on 127.0.0.1."""
    with OpenAIServer(script) as server:
        config = build_config({"agent": {
            "model": {"name": "openai/test-model", "api_base": server.url, "api_key": "sk-test", "retry": {"retries": 0},
                      "per_instance_cost_limit": 0},
            "tools": tools or {}, "templates": templates or {}, **agent}})
        path, info = run_instance(config, tinycalc(tmp_path), tmp_path / "out")
    return server.requests, load_trajectory(path), info


def texts(request: dict) -> list[str]:
    return [m.get("content") if isinstance(m.get("content"), str) else json.dumps(m.get("content")) for m in request["messages"]]


# ---------------------------------------------------------------- attempts and what is shown


def test_only_the_last_failed_reply_is_shown_and_a_success_ends_the_requery(tmp_path):
    script = [Reply(content="first malformed reply"), Reply(content="second malformed reply"),
              bash("echo fixed-it"), submit()]
    requests, traj, info = run(tmp_path, script)
    assert info["exit_status"] == "submitted"
    assert [s.action for s in traj.trajectory] == ["echo fixed-it", "submit"]
    third = texts(requests[2])
    assert "second malformed reply" in third and "first malformed reply" not in " ".join(third)
    assert sum("did not use a valid action format" in t for t in third) == 1  # one error message, the last one
    # The failures are kept in the step, never in the history sent later.
    errors = traj.trajectory[0].extra_info["format_errors"]
    assert [e["response"] for e in errors] == ["first malformed reply", "second malformed reply"]
    assert [e["kind"] for e in errors] == ["format", "format"]
    assert not any("malformed" in t for t in texts(requests[3]))


@pytest.mark.parametrize("max_requeries", [1, 3, 5])
def test_a_step_gets_max_requeries_replies_in_all_then_exit_format(tmp_path, max_requeries):
    requests, traj, info = run(tmp_path, [bash("echo change >> calc.py"), Reply(content="never an action")],
                               max_requeries=max_requeries)
    assert len(requests) == 1 + max_requeries
    assert info["exit_status"] == "submitted (exit_format)" and "+change" in info["submission"]
    assert len(traj.info.format_errors) == max_requeries


def test_the_default_is_swe_agents_three_attempts(tmp_path):
    requests, _, info = run(tmp_path, [Reply(content="no action")])
    assert len(requests) == 3 and info["exit_status"] == "exit_format"


# ---------------------------------------------------------------- blocklist


@pytest.mark.parametrize("command", ["vim calc.py", "nohup touch /testbed/ran_it", "python", "make test", "tail -f log"])
def test_blocklisted_commands_are_requeried_not_run(tmp_path, command):
    script = [bash(command), bash("ls /testbed"), submit()]
    requests, traj, info = run(tmp_path, script)
    assert info["exit_status"] == "submitted" and [s.action for s in traj.trajectory] == ["ls /testbed", "submit"]
    assert "ran_it" not in traj.trajectory[0].observation  # the nohup'd touch never ran
    error = traj.trajectory[0].extra_info["format_errors"][0]
    assert error["kind"] == "blocked" and f"The command '{command}' was NOT run" in error["error"]
    second = requests[1]["messages"]
    assert second[-1]["content"] == error["error"] and second[-2]["role"] == "assistant"
    assert command in second[-2]["content"]  # an empty-content tool call is shown by its command line


def test_commands_that_only_look_like_blocked_ones_run(tmp_path):
    script = [bash("python -c 'print(6*7)'"), bash("sh -c 'echo via-sh'"), submit()]
    _, traj, info = run(tmp_path, script)
    assert info["exit_status"] == "submitted"
    assert [s.observation.strip() for s in traj.trajectory[:2]] == ["42", "via-sh"]
    assert "format_errors" not in traj.trajectory[0].extra_info


def test_blocklist_and_its_template_are_configurable(tmp_path):
    tools = {"filter": {"blocklist": ["rm "], "blocklist_standalone": [], "blocklist_error_template": "NO: {{action}}"}}
    script = [bash("rm calc.py"), bash("vim --version | head -1 || true"), submit()]
    requests, traj, info = run(tmp_path, script, tools=tools)
    assert requests[1]["messages"][-1]["content"] == "NO: rm calc.py"
    assert traj.trajectory[0].action.startswith("vim")  # no longer blocked by the default list
    assert "calc.py" not in info["submission"]


# ---------------------------------------------------------------- bash syntax check


def test_bash_that_does_not_parse_is_requeried_with_bash_n_output(tmp_path):
    script = [bash("touch /testbed/should_not_exist; if then fi"), bash("ls /testbed"), submit()]
    requests, traj, info = run(tmp_path, script)
    assert [s.action for s in traj.trajectory] == ["ls /testbed", "submit"]
    assert "should_not_exist" not in traj.trajectory[0].observation  # nothing of it ran
    error = traj.trajectory[0].extra_info["format_errors"][0]
    assert error["kind"] == "bash_syntax" and "syntax error" in error["error"]
    assert "bash -n" in requests[1]["messages"][-1]["content"]


def test_unclosed_quote_heredoc_and_custom_template(tmp_path):
    templates = {"shell_check_error_template": "SYNTAX[{{bash_stderr.strip()}}]"}
    good_heredoc = "cat > /tmp/x.txt <<'EOF'\nif then ( unbalanced\nEOF\ncat /tmp/x.txt"
    script = [bash("echo 'unclosed"), bash(good_heredoc), submit()]
    requests, traj, info = run(tmp_path, script, templates=templates)
    message = requests[1]["messages"][-1]["content"]
    assert message.startswith("SYNTAX[") and "unexpected EOF" in message
    assert traj.trajectory[0].observation.strip() == "if then ( unbalanced"  # a heredoc's body is data


def test_syntax_check_can_be_turned_off(tmp_path):
    _, traj, _ = run(tmp_path, [bash("echo (", "x"), submit()], tools={"check_bash_syntax": False})
    assert traj.trajectory[0].action == "echo (" and "syntax error" in traj.trajectory[0].observation


def test_each_rule_uses_its_own_template_within_one_step(tmp_path):
    tools = {"format_error_template": "FORMAT {{error}}", "filter": {"blocklist_error_template": "BLOCKED {{action}}"}}
    templates = {"shell_check_error_template": "SHELL {{action}}"}
    script = [Reply(content="no call"), bash("vim x"), bash("echo ("), bash("echo ok"), submit()]
    requests, traj, info = run(tmp_path, script, tools=tools, templates=templates, max_requeries=4)
    shown = [r["messages"][-1]["content"] for r in requests[1:4]]
    assert shown[0].startswith("FORMAT ") and shown[1] == "BLOCKED vim x" and shown[2] == "SHELL echo ("
    assert [e["kind"] for e in traj.trajectory[0].extra_info["format_errors"]] == ["format", "blocked", "bash_syntax"]
    assert traj.trajectory[0].action == "echo ok"


# ---------------------------------------------------------------- review on submit


REVIEW_TOOLS = {"bundles": ["tools/registry", "tools/edit_anthropic", "tools/review_on_submit_m"]}


def test_review_on_submit_shows_the_diff_then_submits(tmp_path):
    script = [bash("echo '# reviewed' >> calc.py"), submit(), submit()]
    requests, traj, info = run(tmp_path, script, tools=REVIEW_TOOLS)
    assert info["exit_status"] == "submitted" and "+# reviewed" in info["submission"]
    review = traj.trajectory[1]
    assert review.action == "submit" and "+# reviewed" in review.observation and "<diff>" in review.observation
    assert "call submit again" in review.observation
    # The model read the review as the submit call's tool result.
    third = requests[2]["messages"]
    assert third[-1]["role"] == "tool" and "+# reviewed" in third[-1]["content"]
    assert len(traj.trajectory) == 3 and traj.trajectory[-1].observation == info["submission"]


def test_review_messages_are_templates_one_per_round(tmp_path):
    tools = {**REVIEW_TOOLS, "registry_variables": {"SUBMIT_REVIEW_MESSAGES": [
        "ROUND 1 for: {{problem_statement[:20]}}", "ROUND 2 diff has {{diff.count('\n')}} lines"]}}
    script = [bash("echo '# r' >> calc.py"), submit(), submit(), submit()]
    _, traj, info = run(tmp_path, script, tools=tools)
    assert info["exit_status"] == "submitted" and len(traj.trajectory) == 4
    assert traj.trajectory[1].observation.startswith("ROUND 1 for: ")
    lines = info["submission"].count("\n")
    assert traj.trajectory[2].observation.strip() == f"ROUND 2 diff has {lines} lines"


def test_plain_submit_bundle_submits_at_once(tmp_path):
    _, traj, info = run(tmp_path, [bash("echo '# p' >> calc.py"), submit()],
                        tools={"bundles": ["tools/registry", "tools/edit_anthropic", "tools/submit"]})
    assert info["exit_status"] == "submitted" and len(traj.trajectory) == 2


def test_forced_submit_skips_the_review(tmp_path):
    script = [Reply(content="DISCUSSION\nedit\n```\necho '# f' >> calc.py\n```"), Reply(content="done\n```\nsubmit -f\n```")]
    tools = {**REVIEW_TOOLS, "parse_function": {"type": "thought_action"}}
    _, traj, info = run(tmp_path, script, tools=tools)
    assert info["exit_status"] == "submitted" and "+# f" in info["submission"] and len(traj.trajectory) == 2


def test_review_registry_variables_are_checked():
    def tools(**t):
        return {"agent": {"model": {"name": "replay", "replay_path": "x.jsonl"}, "tools": t}}

    with pytest.raises(UserError, match="SUBMIT_REVIEW_MESSAGES needs the tools/review_on_submit_m bundle"):
        build_config(tools(registry_variables={"SUBMIT_REVIEW_MESSAGES": ["x"]}))
    with pytest.raises(UserError, match=r"\['USE_LINTER'\] are not supported"):
        build_config(tools(registry_variables={"USE_LINTER": "true"}))
    with pytest.raises(UserError, match="USE_FILEMAP must be 'true' or 'false'"):
        build_config(tools(registry_variables={"USE_FILEMAP": "yes"}))
    with pytest.raises(UserError, match="not shell variable names"):
        build_config(tools(env_variables={"A;touch /tmp/x": "1"}))
    with pytest.raises(UserError, match="unknown tool bundle"):
        build_config(tools(bundles=[{"path": "tools/windowed"}]))
    with pytest.raises(UserError, match="hidden_tools"):
        build_config(tools(bundles=[{"path": "tools/registry", "hidden_tools": ["x"]}]))
    assert build_config(tools(bundles=["tools/edit_anthropic"], enable_bash_tool=False)).agent.tools.tool_names() == \
        ["str_replace_editor"]


# ---------------------------------------------------------------- file map


BIG_PY = "\n".join(["import os", "", "class Big:", '    """A large class."""', ""] + [
    f"    def method_{i}(self, x):\n" + "".join(f"        x = x + {j}  # padding padding padding padding\n" for j in range(8))
    + "        return x\n" for i in range(40)])


@pytest.mark.parametrize("use_filemap", [True, False])
def test_use_filemap_shows_large_python_files_in_outline(tmp_path, use_filemap):
    assert len(BIG_PY) > 16000
    view = {"command": "view", "path": "/testbed/big.py"}
    script = [Reply(content="", tool_calls=[tool_call("str_replace_editor", {"command": "create", "path": "/testbed/big.py",
                                                                            "file_text": BIG_PY})]),
              Reply(content="", tool_calls=[tool_call("str_replace_editor", view)]),
              Reply(content="", tool_calls=[tool_call("str_replace_editor", {**view, "view_range": [13, 15]})]), submit()]
    tools = {"bundles": ["tools/registry", "tools/edit_anthropic", "tools/submit"],
             "registry_variables": {"USE_FILEMAP": "true" if use_filemap else "false"}}
    _, traj, info = run(tmp_path, script, tools=tools)
    outline, ranged = traj.trajectory[1].observation, traj.trajectory[2].observation
    if use_filemap:
        assert "... eliding lines 7-15 ..." in outline and "def method_39(self, x):" in outline
        assert "<response clipped>" not in outline and len(outline) < 16000
    else:
        assert "eliding" not in outline and "<response clipped>" in outline
    assert "x = x + 6" in ranged and "eliding" not in ranged  # a view_range is always shown in full


def test_swe_agent_format_config_with_review_and_filemap_runs(tmp_path):
    """A config written in SWE-agent's schema (bundle paths as mappings, registry variables, the agent-level
    max_requeries) loads from YAML and runs on the real task with review-on-submit and the file map on."""
    with OpenAIServer([bash("echo '# swe-agent style' >> calc.py"),
                       Reply(content="", tool_calls=[tool_call("str_replace_editor", {"command": "view", "path": "/testbed/calc.py"})]),
                       submit(), submit()]) as server:
        path = tmp_path / "sweagent.yaml"
        path.write_text(f"""
agent:
  type: default
  templates:
    system_template: You are a careful engineer working in {{{{working_dir}}}}.
    instance_template: "Fix this: {{{{problem_statement}}}}"
    next_step_template: "OBSERVATION:\\n{{{{observation}}}}"
    next_step_no_output_template: No output.
  tools:
    execution_timeout: 300
    bundles:
      - path: tools/registry
      - path: tools/edit_anthropic
      - path: tools/review_on_submit_m
    enable_bash_tool: true
    parse_function:
      type: function_calling
    registry_variables:
      USE_FILEMAP: 'true'
      SUBMIT_REVIEW_MESSAGES:
        - |
          Check your work, then submit again.
          <diff>
          {{{{diff}}}}
          </diff>
  history_processors:
    - type: cache_control
      last_n_messages: 2
  max_requeries: 3
  model:
    name: openai/test-model
    api_base: {server.url}
    api_key: sk-test
    per_instance_cost_limit: 0
    temperature: 0.0
""")
        config = load_config([path])
        traj_path, info = run_instance(config, tinycalc(tmp_path), tmp_path / "out")
    traj = load_trajectory(traj_path)
    assert info["exit_status"] == "submitted" and "+# swe-agent style" in info["submission"]
    assert [s.action.split()[0] for s in traj.trajectory] == ["echo", "str_replace_editor", "submit", "submit"]
    assert traj.trajectory[2].observation.startswith("Check your work") and "+# swe-agent style" in traj.trajectory[2].observation
    tools = [t["function"]["name"] for t in server.requests[0]["tools"]]
    assert tools == ["bash", "str_replace_editor", "submit"]


def test_the_shipped_paper_config_runs_with_review_and_filemap(tmp_path, monkeypatch):
    """config/qwen32b_switch_claude_python_tools.yaml on the real task, its endpoints pointed at 127.0.0.1:
    the expert (review_on_submit_m, USE_FILEMAP) sees a large file in outline and must submit twice."""
    from pathlib import Path

    from tests.agent_helpers import write_replay

    monkeypatch.setenv("STUDENT_API_BASE", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    student = write_replay(tmp_path, [{"thought": "look", "action": "ls /testbed"}], "student.jsonl")
    make_big = "python3 -c \"open('/testbed/big.py','w').write(''.join('def f%d(x):\\n' % i + '    x += 1  # padding padding padding\\n' * 8 + '    return x\\n\\n' for i in range(80)))\""
    script = [bash(make_big), Reply(content="", tool_calls=[tool_call("str_replace_editor", {"command": "view", "path": "/testbed/big.py"})]),
              bash("rm /testbed/big.py && sed -i 's/(len(values) + 1)/len(values)/' calc.py"), submit(), submit()]
    shipped = Path(__file__).parent.parent / "config" / "qwen32b_switch_claude_python_tools.yaml"
    with OpenAIServer(script) as server:
        config = load_config([shipped], [
            "env.type=local", "agent.model.switching_criteria.start_step=1", "agent.model.switching_criteria.end_step=1",
            "agent.model.models.0.name=replay", f"agent.model.models.0.replay_path={student}",
            "agent.model.models.1.name=openai/test-model", f"agent.model.models.1.api_base={server.url}",
            "agent.model.models.1.api_key=sk-test", "agent.model.models.1.per_instance_cost_limit=0",
            "agent.model.models.1.total_cost_limit=0"])
        path, info = run_instance(config, tinycalc(tmp_path), tmp_path / "out")
    steps = load_trajectory(path).trajectory
    assert info["exit_status"] == "submitted" and "return sum(values) / len(values)" in info["submission"]
    assert [s.model_role for s in steps] == ["student"] + ["expert"] * 5
    assert "... eliding lines 2-10 ..." in steps[2].observation
    assert "<diff>" in steps[4].observation and "call submit again" in steps[4].observation
    assert config.agent.model.models[1].tools.execution_timeout == 300


@pytest.mark.parametrize("section, key", [("templates", "shell_check_error_template"), ("templates", "next_step_template"),
                                          ("tools", "format_error_template")])
def test_a_template_that_does_not_parse_is_a_config_error(section, key):
    with pytest.raises(UserError, match=f"{key}: not a valid jinja template"):
        build_config({"agent": {"model": {"name": "replay", "replay_path": "x.jsonl"}, section: {key: "{{ unclosed"}}})
    with pytest.raises(UserError, match=r"SUBMIT_REVIEW_MESSAGES\[1\]: not a valid jinja template"):
        build_config({"agent": {"model": {"name": "replay", "replay_path": "x.jsonl"}, "tools": {
            "bundles": ["tools/review_on_submit_m"], "registry_variables": {"SUBMIT_REVIEW_MESSAGES": ["ok {{diff}}", "{% if %}"]}}}})
    with pytest.raises(UserError, match="block_unless_regex.r2: not a regular expression"):
        build_config({"agent": {"model": {"name": "replay", "replay_path": "x.jsonl"},
                                "tools": {"filter": {"block_unless_regex": {"r2": "(unclosed"}}}}})
