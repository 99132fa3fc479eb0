"""Costs fail closed: an unpriced model with a cost limit refuses to start; prices (given, from a
litellm registry file, shipped) are counted, cached input included; run-batch ends with a cost table."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweagent_oec.config import ModelConfig, Price, load_config
from sweagent_oec.errors import UserError
from sweagent_oec.models.base import BatchBudget
from sweagent_oec.models.litellm_model import LiteLLMModel
from sweagent_oec.models.pricing import SHIPPED_PRICES, Usage, cost, price_for
from tests.agent_helpers import SOLUTION, switching_config, tinycalc
from tests.openai_server import OpenAIServer, Reply, tool_call

CLI = [sys.executable, "-m", "sweagent_oec.cli"]
MESSAGES = [{"role": "user", "content": "hi"}]
CONFIGS = Path(__file__).parent.parent / "config"


@pytest.mark.parametrize("limits", [{}, {"per_instance_cost_limit": 1.0}, {"per_instance_cost_limit": 0, "total_cost_limit": 10.0}])
def test_unpriced_model_with_a_cost_limit_refuses_in_one_line(limits):
    config = ModelConfig(name="openai/unpriced-model", api_base="http://127.0.0.1:9/v1", api_key="k", **limits)
    with pytest.raises(UserError) as err:
        LiteLLMModel(config)  # the default per-instance limit (3.0, as in SWE-agent) is a limit too
    message = str(err.value)
    assert "price_per_million_tokens" in message and "openai/unpriced-model" in message and "\n" not in message


def test_unpriced_model_without_limits_counts_zero_and_says_so_once(caplog):
    with OpenAIServer([Reply(content="a", prompt_tokens=1000)]) as server, caplog.at_level(logging.WARNING):
        config = ModelConfig(name="openai/free-local-model", api_base=server.url, api_key="k", per_instance_cost_limit=0)
        m = LiteLLMModel(config, BatchBudget())
        m.query(MESSAGES)
        LiteLLMModel(config, BatchBudget()).query(MESSAGES)
    assert m.stats.instance_cost == 0 and m.stats.tokens_sent == 1000
    assert sum("openai/free-local-model" in r.getMessage() and "$0" in r.getMessage() for r in caplog.records) == 1


def test_a_given_price_is_counted_and_the_limit_fires():
    budget = BatchBudget()
    with OpenAIServer([Reply(content="a", prompt_tokens=300_000, completion_tokens=50_000)]) as server:
        config = ModelConfig(name="openai/unpriced-model", api_base=server.url, api_key="k",
                             price_per_million_tokens=[2.0, 8.0], per_instance_cost_limit=1.5)
        m = LiteLLMModel(config, budget)
        m.query(MESSAGES)
        m.query(MESSAGES)
        assert m.stats.instance_cost == pytest.approx(2 * (0.3 * 2.0 + 0.05 * 8.0))
        assert budget.cost == pytest.approx(m.stats.instance_cost)
        from sweagent_oec.exits import CostLimitExceeded

        with pytest.raises(CostLimitExceeded):
            m.query(MESSAGES)
    assert len(server.requests) == 2


def test_cached_input_is_priced_at_cache_rates():
    price = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    usage = Usage(input_tokens=1_000_000 + 200_000 + 500_000, output_tokens=100_000,
                  cache_read_tokens=500_000, cache_write_tokens=200_000)
    assert cost(price, usage) == pytest.approx(3.0 + 1.5 + 0.3 * 0.5 + 3.75 * 0.2)
    # Without cache prices, cached input costs what input costs (never less than it may).
    assert cost(Price(input=1.0, output=0.0), usage) == pytest.approx(1.7)
    assert Price.model_validate([1, 2, 0.1, 1.25]) == Price(input=1, output=2, cache_read=0.1, cache_write=1.25)
    with pytest.raises(ValueError):
        Price.model_validate([1, 2, 3])
    with pytest.raises(ValueError):
        Price.model_validate({"input": -1, "output": 2})


def test_every_model_the_shipped_configs_name_has_an_explicit_price(monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "STUDENT_API_BASE", "OEC_STUDENT_API_BASE"):
        monkeypatch.setenv(name, "test")
    checked = 0
    for path in sorted(CONFIGS.glob("*.yaml")):
        model = load_config([path]).agent.model
        for sub in model.models or [model]:
            if sub.name in ("replay", "oracle") or not (sub.per_instance_cost_limit or sub.total_cost_limit):
                continue
            bare = sub.name.split("/", 1)[-1]
            assert bare in SHIPPED_PRICES, f"{path.name}: {sub.name} has a cost limit but no shipped price"
            assert price_for(sub) == SHIPPED_PRICES[bare]
            checked += 1
    assert checked >= 3


def test_litellm_model_registry_file_prices_a_model_relative_to_the_config(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/prices.json").write_text(json.dumps({"my-org/coder": {
        "input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6, "cache_read_input_token_cost": 1e-7}}))
    path = tmp_path / "conf/run.yaml"
    path.write_text(yaml.safe_dump({"agent": {"model": {"name": "openai/my-org/coder", "api_key": "k",
                                                          "litellm_model_registry": "prices.json"}}}))
    model = load_config([path]).agent.model
    assert model.litellm_model_registry == str(tmp_path / "conf/prices.json")
    price = price_for(model.model_copy(update={"name": "my-org/coder"}))
    assert (price.input, price.output, price.cache_read, price.cache_write) == pytest.approx((1.0, 4.0, 0.1, None))
    (tmp_path / "conf/prices.json").write_text("{not json")
    with pytest.raises(UserError, match="litellm_model_registry .* is not JSON"):
        price_for(model)
    for entry in ({"input_cost_per_token": -1e-6, "output_cost_per_token": 0}, {"input_cost_per_token": "cheap", "output_cost_per_token": 0}):
        (tmp_path / "conf/prices.json").write_text(json.dumps({"my-org/coder": entry}))
        with pytest.raises(UserError, match="must be non-negative numbers"):
            price_for(model)
    (tmp_path / "conf/prices.json").write_text(json.dumps({"my-org/coder": {"max_tokens": 10}}))
    with pytest.raises(UserError, match="needs input_cost_per_token and output_cost_per_token"):
        price_for(model)


def _write(tmp_path, data, name):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _instances(tmp_path, n):
    from sweagent_oec.tasks.instances import write_instances_jsonl

    base = tinycalc(tmp_path)
    path = tmp_path / "instances.jsonl"
    write_instances_jsonl(path, [base.model_copy(update={"instance_id": f"tiny-{i}"}) for i in range(n)])
    return path


def test_run_batch_refuses_an_unpriced_limited_expert_before_any_instance(tmp_path):
    student = {"name": "replay", "replay_path": str(SOLUTION)}
    expert = {"name": "openai/unpriced-expert", "api_base": "http://127.0.0.1:9/v1", "api_key": "k", "total_cost_limit": 50}
    config = _write(tmp_path, switching_config(student, expert, {"type": "step_count", "threshold": 2}), "c.yaml")
    out = tmp_path / "out"
    result = subprocess.run(CLI + ["run-batch", "-c", str(config), "-i", str(_instances(tmp_path, 2)), "-o", str(out),
                                   "--no-progress"], capture_output=True, text=True, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "price_per_million_tokens" in lines[0] and "openai/unpriced-expert" in lines[0]
    assert not any(out.rglob("*.traj"))


def test_run_batch_ends_with_a_cost_table_per_role(tmp_path):
    """Student: a replay (free); expert: a priced loopback model. The table's numbers are exact."""
    student = {"name": "replay", "replay_path": str(SOLUTION)}

    def answer(request):
        n = sum(m["role"] == "assistant" for m in request["messages"])
        call = tool_call("submit", {}) if n >= 3 else tool_call("bash", {"command": "sed -i 's/(len(values) + 1)/len(values)/' calc.py"})
        return Reply(content="", tool_calls=[call], prompt_tokens=1000 + n, completion_tokens=10)

    with OpenAIServer(answer) as server:
        expert = {"name": "openai/priced-expert", "api_base": server.url, "api_key": "k",
                  "price_per_million_tokens": [2.0, 10.0], "per_instance_cost_limit": 1.0}
        config = _write(tmp_path, switching_config(student, expert, {"type": "step_count", "threshold": 2}), "c.yaml")
        result = subprocess.run(CLI + ["run-batch", "-c", str(config), "-i", str(_instances(tmp_path, 2)),
                                       "-o", str(tmp_path / "out"), "--no-progress"],
                                capture_output=True, text=True, cwd=tmp_path, check=True)
    # Each instance: 2 student (replay) steps, then the expert at n = 2 (a fix) and n = 3 (submit).
    sent = 2 * ((1000 + 2) + (1000 + 3))
    expected = (sent * 2.0 + 2 * 2 * 10 * 10.0) / 1e6
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.split()}
    assert rows["role"][:3] == ["role", "instances", "calls"]
    assert rows["expert"][1:8] == ["2", "4", str(sent), "40", "0", "0", f"{expected:.4f}"]
    assert rows["student"][1:3] == ["2", "4"] and rows["student"][-1] == "0.0000"
    assert rows["all"][-1] == f"{expected:.4f}"


def test_a_server_that_reports_no_usage_is_not_free(tmp_path):
    """A priced model whose server leaves `usage` out: tokens are counted locally, so the limit still fires."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NoUsage(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "word " * 200}, "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), NoUsage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = ModelConfig(name="openai/gpt-4o", api_base=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="k",
                             per_instance_cost_limit=0.001)
        m = LiteLLMModel(config, BatchBudget())
        m.query([{"role": "user", "content": "fix " * 300}])
        assert m.stats.tokens_sent > 250 and m.stats.tokens_received > 150
        assert m.stats.instance_cost == pytest.approx((m.stats.tokens_sent * 2.5 + m.stats.tokens_received * 10.0) / 1e6)
        from sweagent_oec.exits import CostLimitExceeded

        with pytest.raises(CostLimitExceeded):
            m.query([{"role": "user", "content": "fix " * 300}])
    finally:
        server.shutdown()
        server.server_close()


def test_a_switching_judge_is_priced_too_and_has_its_row():
    from sweagent_oec.batch import BatchState
    from sweagent_oec.config import build_config
    from sweagent_oec.models.pricing import check_prices

    judge = {"name": "openai/unpriced-judge", "api_key": "k"}  # the default per-instance limit applies
    criteria = {"type": "any_of", "criteria": [{"type": "step_count", "threshold": 30},
                                               {"type": "judge", "every": 2, "judge": judge}]}
    data = switching_config({"name": "replay", "replay_path": str(SOLUTION)}, {"name": "oracle"}, criteria)
    with pytest.raises(UserError, match="openai/unpriced-judge has a cost limit .* price_per_million_tokens"):
        check_prices(build_config(data).agent.model)
    check_prices(build_config({**data, "agent": {"model": {**data["agent"]["model"], "switching_criteria": {
        **criteria, "criteria": [criteria["criteria"][0], {**criteria["criteria"][1], "judge": {**judge, "price_per_million_tokens": [1, 1]}}]}}}}).agent.model)

    state = BatchState(total=2)
    stats = {"instance_cost": 0.25, "tokens_sent": 100, "tokens_received": 10, "api_calls": 2, "cache_read_tokens": 40}
    for iid in ("a", "b"):
        state.note_stats(iid, {"model_stats": {}, "oec": {"model_stats": {"student": stats, "expert": stats},
                                                         "triggers": {"criteria": [{}, {"judge_stats": stats}]}}})
    rows = {line.split()[0]: line.split() for line in state.cost_table().splitlines()}
    assert rows["judge"][1:] == ["2", "4", "200", "20", "80", "0", "0.5000"]
    assert rows["all"][-1] == "1.5000"


def test_run_refuses_an_unpriced_limited_model_in_one_line(tmp_path):
    config = _write(tmp_path, {"agent": {"model": {"name": "openai/unpriced-model", "api_key": "k",
                                                   "api_base": "http://127.0.0.1:9/v1"}}}, "c.yaml")
    result = subprocess.run(CLI + ["run", "-c", str(config), "--bundled", "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "price_per_million_tokens" in lines[0], result.stderr
    assert not any((tmp_path / "out").rglob("*.traj"))


def test_swe_agent_model_keys_stop_and_system_as_user_reach_the_server():
    with OpenAIServer([Reply(content="ok")]) as server:
        config = ModelConfig(name="openai/m", api_base=server.url, api_key="k", per_instance_cost_limit=0,
                             stop=["</function>"], convert_system_to_user=True, top_p=0.9, max_output_tokens=77)
        LiteLLMModel(config, BatchBudget()).query([{"role": "system", "content": "rules"}, {"role": "user", "content": "go"}])
    request = server.requests[0]
    assert request["stop"] == ["</function>"] and request["top_p"] == 0.9 and request["max_tokens"] == 77
    assert [m["role"] for m in request["messages"]] == ["user", "user"]


def test_a_resumed_batch_does_not_get_a_fresh_total_budget(tmp_path):
    """$1 a call, $2.5 in all: the first run finishes one instance ($2); the resumed run may spend
    only $0.5 more, so its first instance stops after one call and no other starts."""

    def answer(request):
        done = any(m["role"] == "assistant" for m in request["messages"])
        return Reply(content="", tool_calls=[tool_call("submit", {}) if done else tool_call("bash", {"command": "echo hi"})],
                     prompt_tokens=1_000_000, completion_tokens=0)

    with OpenAIServer(answer) as server:
        config = _write(tmp_path, {"agent": {"model": {
            "name": "openai/priced", "api_base": server.url, "api_key": "k", "price_per_million_tokens": [1.0, 0.0],
            "per_instance_cost_limit": 0, "total_cost_limit": 2.5}}}, "c.yaml")
        instances = _instances(tmp_path, 3)
        first = tmp_path / "one.jsonl"
        first.write_text(instances.read_text().splitlines()[0] + "\n")
        out = tmp_path / "out"
        for source in (first, instances):
            result = subprocess.run(CLI + ["run-batch", "-c", str(config), "-i", str(source), "-o", str(out), "--no-progress"],
                                    capture_output=True, text=True, cwd=tmp_path, check=True)
    statuses = yaml.safe_load((out / "run_batch_exit_statuses.yaml").read_text())
    assert statuses == {"submitted": ["tiny-0"], "exit_cost": ["tiny-1"]}, (statuses, result.stderr)  # its diff is empty
    assert len(server.requests) == 2 + 1
    assert "total_cost_limit" in result.stderr
