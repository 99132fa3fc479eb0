"""The paper's expert, Claude, reached through litellm's `anthropic/` provider on a loopback server
that checks requests as the Messages API does: a SWE-agent-format switching config runs on the
bundled tinycalc task, its cost is the shipped price of the usage the server reported, and the
per-instance limit stops it when set low."""

import copy
import json

import pytest
import yaml

from sweagent_oec.config import load_config
from sweagent_oec.data.trajectory import load_trajectory
from sweagent_oec.models.pricing import SHIPPED_PRICES, Usage, cost
from sweagent_oec.runner import run_instance
from tests.agent_helpers import tinycalc
from tests.anthropic_server import AnthropicServer, AReply, InvalidRequest, tool_use, validate_request

EXPERT = "anthropic/claude-3-7-sonnet-20250219"
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
TOOLS = [{"name": "bash", "description": "run", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]


def _ok_request() -> dict:
    call = {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}}
    return {"model": "claude", "max_tokens": 10, "tools": copy.deepcopy(TOOLS), "system": "sys",
            "messages": [{"role": "user", "content": "fix it"},
                         {"role": "assistant", "content": [{"type": "text", "text": "look"}, call]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py"}]}]}


def _breaks(request):
    for m in request["messages"]:
        if isinstance(m["content"], str):
            m["content"] = [{"type": "text", "text": m["content"]}]
        for block in m["content"]:
            block["cache_control"] = {"type": "ephemeral"}
    request["tools"][0]["cache_control"] = {"type": "ephemeral"}


@pytest.mark.parametrize("spoil, message", [
    (lambda r: r.pop("max_tokens"), "max_tokens"),
    (lambda r: r["messages"].insert(1, {"role": "user", "content": "again"}), "roles must alternate"),
    (lambda r: r["messages"].__setitem__(0, {"role": "user", "content": " "}), "non-whitespace text"),
    (lambda r: r["messages"][1]["content"].__setitem__(0, {"type": "text", "text": ""}), "non-whitespace text"),
    (lambda r: r["messages"].pop(), None),  # a trailing assistant turn is fine...
    (lambda r: r["messages"][2]["content"].__setitem__(0, {"type": "text", "text": "no result"}), "without `tool_result`"),
    (lambda r: r["messages"][2]["content"][0].__setitem__("tool_use_id", "toolu_9"), "unexpected `tool_use_id`"),
    (lambda r: r.pop("tools"), "must define tools"),
    (_breaks, "A maximum of 4 blocks with cache_control"),
    (lambda r: r["tools"][0].__setitem__("input_schema", {"type": "object", "properties": {"x": {"type": "strin"}}}), "JSON schema is invalid"),
    (lambda r: r["tools"][0].__setitem__("name", "bad name"), "should match pattern"),
    (lambda r: r["messages"].__setitem__(0, {"role": "system", "content": "x"}), "'user' or 'assistant'"),
    (lambda r: r.__setitem__("extra_body", {}), "Extra inputs are not permitted"),
    (lambda r: r.__setitem__("temperature", 1.5), "temperature"),
])
def test_the_server_refuses_what_the_api_refuses(spoil, message):
    validate_request(_ok_request(), HEADERS)
    request = _ok_request()
    spoil(request)
    if message is None:
        validate_request(request, HEADERS)
        return
    with pytest.raises(InvalidRequest, match=message):
        validate_request(request, HEADERS)


def test_the_server_wants_the_api_headers():
    with pytest.raises(InvalidRequest, match="x-api-key"):
        validate_request(_ok_request(), {"anthropic-version": "2023-06-01"})
    with pytest.raises(InvalidRequest, match="anthropic-version"):
        validate_request(_ok_request(), {"x-api-key": "k"})


# Written for this test in SWE-agent's schema (bundle mappings, registry variables, review on
# submit, the fork's switching keys); the student is a replay in the paper's XML style, its path
# relative to this file; at the switch its turns are re-rendered as tool_use / tool_result pairs.
CONFIG = """
agent:
  templates:
    max_observation_length: 70000
  tools:
    bundles:
      - path: tools/registry
      - path: tools/edit_anthropic
      - path: tools/review_on_submit_m
    registry_variables:
      USE_FILEMAP: 'true'
    enable_bash_tool: true
    parse_function:
      type: function_calling
    execution_timeout: 300
  model:
    name: switching
    seed: 0
    switching_criteria:
      type: step_count
      threshold: 2
    models:
      - name: replay
        replay_path: student.jsonl
        tools:
          bundles: [tools/registry, tools/edit_anthropic, tools/submit]
          parse_function:
            type: xml_function_calling
        history_processors:
          - type: last_n_observations
            n: 1
      - name: anthropic/claude-3-7-sonnet-20250219
        api_base: $OEC_TEST_ANTHROPIC_BASE
        api_key: $OEC_TEST_ANTHROPIC_KEY
        temperature: 0.0
        max_output_tokens: 64000
        per_instance_cost_limit: 2.0
        total_cost_limit: 3000.0
        retry:
          retries: 0
        history_processors:
          - type: cache_control
            last_n_messages: 2
env:
  type: local
"""

STUDENT = [{"thought": "Let me look for mean.", "action": "grep -n 'def mean' -A 4 calc.py"},
           {"thought": "Reproduce it.", "action": "python -c 'from calc import mean; print(mean([1, 2, 3, 4]))'"}]
EXPERT_ACTIONS = [("bash", {"command": "sed -i 's/(len(values) + 1)/len(values)/' calc.py"}),
                  ("bash", {"command": "python -m pytest -q -p no:cacheprovider tests"}),
                  ("submit", {}), ("submit", {})]


def _setup(tmp_path, monkeypatch, server):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "student.jsonl").write_text("".join(json.dumps(s) + "\n" for s in STUDENT))
    (folder / "swe_agent_oec.yaml").write_text(CONFIG)
    monkeypatch.setenv("OEC_TEST_ANTHROPIC_BASE", server.url)
    monkeypatch.setenv("OEC_TEST_ANTHROPIC_KEY", "sk-ant-test-key")
    monkeypatch.chdir(tmp_path)  # the replay path resolves against the config file, not here
    return folder / "swe_agent_oec.yaml"


def _expert():
    actions = iter(EXPERT_ACTIONS)

    def answer(request):
        name, arguments = next(actions, EXPERT_ACTIONS[-1])
        return AReply(text=f"Next: {name}.", tool_uses=[tool_use(name, arguments)], output_tokens=40)

    return answer


def test_switching_run_with_a_claude_expert_costs_the_shipped_price(tmp_path, monkeypatch):
    with AnthropicServer(_expert()) as server:
        path = _setup(tmp_path, monkeypatch, server)
        traj_path, info = run_instance(load_config([path]), tinycalc(tmp_path), tmp_path / "out")
    assert server.invalid == []
    assert info["exit_status"] == "submitted" and "len(values)" in info["submission"]
    traj = load_trajectory(traj_path)
    assert traj.roles() == ["student"] * 2 + ["expert"] * (len(traj.roles()) - 2)
    # Review on submit: the expert's first submit showed the diff, the second submitted.
    assert len(server.requests) == 4  # sed, pytest, submit (review), submit
    assert "len(values)" in json.dumps(server.requests[-1]["messages"][-1])  # the review showed the diff
    # Every request is one the real API takes: the paper's output cap, tools, cache marks.
    assert {r["max_tokens"] for r in server.requests} == {64000}
    assert {t["name"] for t in server.requests[0]["tools"]} == {"bash", "str_replace_editor", "submit"}
    first = server.requests[0]["messages"]  # the student's 2 XML turns, as the API's tool_use/tool_result pairs
    uses = [b for m in first if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"]
    assert [u["input"]["command"] for u in uses] == [s["action"] for s in STUDENT]
    assert "<function=" not in json.dumps(first)
    stats = traj.info.oec.model_stats["expert"]
    usages = [Usage(input_tokens=u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"],
                    output_tokens=u["output_tokens"], cache_read_tokens=u["cache_read_input_tokens"],
                    cache_write_tokens=u["cache_creation_input_tokens"]) for u in server.usages]
    expected = sum(cost(SHIPPED_PRICES["claude-3-7-sonnet-20250219"], u) for u in usages)
    assert stats.instance_cost > 0 and stats.instance_cost == pytest.approx(expected, rel=1e-12)
    assert stats.api_calls == len(server.usages) == 4
    assert stats.tokens_sent == sum(u.input_tokens for u in usages) and stats.tokens_received == 160
    assert stats.cache_read_tokens == sum(u.cache_read_tokens for u in usages) > 0
    assert stats.cache_write_tokens == sum(u.cache_write_tokens for u in usages) > 0
    # The key reached the server; it is in no output file.
    assert "sk-ant-test-key" not in traj_path.read_text()


def test_a_low_per_instance_limit_stops_the_claude_expert(tmp_path, monkeypatch):
    with AnthropicServer(_expert()) as server:
        path = _setup(tmp_path, monkeypatch, server)
        config = load_config([path], ["agent.model.models.1.per_instance_cost_limit=0.0001"])
        traj_path, info = run_instance(config, tinycalc(tmp_path), tmp_path / "out")
    assert server.invalid == [] and len(server.requests) == 1
    assert "exit_cost" in info["exit_status"]
    stats = load_trajectory(traj_path).info.oec.model_stats["expert"]
    assert stats.api_calls == 1 and stats.instance_cost > 0.0001


def test_server_usage_shows_cache_reads_once_a_prefix_was_written():
    """The loopback cache behaves like the API's: a marked prefix written once is read after."""
    server = AnthropicServer([AReply(text="x")])
    first = {"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a" * 400, "cache_control": {"type": "ephemeral"}}]}]}
    second = copy.deepcopy(first)
    second["messages"] += [{"role": "assistant", "content": "ok"},
                           {"role": "user", "content": [{"type": "text", "text": "b" * 400, "cache_control": {"type": "ephemeral"}}]}]
    one, two = server.usage(first, 1), server.usage(second, 1)
    assert one["cache_read_input_tokens"] == 0 and one["cache_creation_input_tokens"] > 100
    assert two["cache_read_input_tokens"] == one["cache_creation_input_tokens"] and two["cache_creation_input_tokens"] > 100
    server._server.server_close()
