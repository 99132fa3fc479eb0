"""The litellm path against a real HTTP server on 127.0.0.1 speaking the OpenAI chat API."""

import pytest

from sweagent_oec.config import ModelConfig, RetryConfig
from sweagent_oec.exits import ContextWindowExceeded, CostLimitExceeded, ModelAPIError, TotalCostLimitExceeded
from sweagent_oec.models.base import BatchBudget
from sweagent_oec.models.litellm_model import LiteLLMModel
from tests.openai_server import OpenAIServer, Reply, tool_call

MESSAGES = [{"role": "system", "content": "sys"}, {"role": "user", "content": "fix it", "model_role": "student"}]


def model(server, **kw) -> LiteLLMModel:
    kw.setdefault("per_instance_cost_limit", 0)  # an unpriced model with a cost limit refuses to start
    config = ModelConfig(name="openai/test-model", api_base=server.url, api_key="sk-test",
                         retry=RetryConfig(retries=3, min_wait=0.01, max_wait=0.05), **kw)
    return LiteLLMModel(config, budget=kw.pop("budget", BatchBudget()))


def test_plain_text_and_tool_calls_and_usage():
    script = [Reply(content="thinking", prompt_tokens=12, completion_tokens=3),
              Reply(content="", tool_calls=[tool_call("bash", {"command": "ls"}, "call_1")])]
    with OpenAIServer(script) as server:
        m = model(server)
        first = m.query(MESSAGES)
        second = m.query(MESSAGES, tools=[{"type": "function", "function": {"name": "bash", "parameters": {}}}])
    assert first.content == "thinking" and first.tool_calls is None
    assert second.tool_calls == [{"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}}]
    assert m.stats.api_calls == 2 and m.stats.tokens_sent == 22 and m.stats.tokens_received == 8
    # Bookkeeping keys never reach the provider; tools do.
    assert "model_role" not in server.requests[0]["messages"][1]
    assert server.requests[1]["tools"][0]["function"]["name"] == "bash"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_errors_are_retried(status):
    with OpenAIServer([Reply(status=status), Reply(status=status), Reply(content="ok")]) as server:
        reply = model(server).query(MESSAGES)
    assert reply.content == "ok" and len(server.requests) == 3


def test_auth_error_is_not_retried():
    with OpenAIServer([Reply(status=401, error_message="invalid api key")]) as server:
        with pytest.raises(ModelAPIError, match="AuthenticationError"):
            model(server).query(MESSAGES)
    assert len(server.requests) == 1


def test_retries_give_up_with_exit_api():
    with OpenAIServer([Reply(status=500)]) as server:
        with pytest.raises(ModelAPIError) as err:
            model(server).query(MESSAGES)
    assert err.value.exit_status == "exit_api" and len(server.requests) == 4


def test_server_down_is_exit_api():
    config = ModelConfig(name="openai/x", api_base="http://127.0.0.1:9/v1", api_key="k", per_instance_cost_limit=0,
                         retry=RetryConfig(retries=1, min_wait=0.01, max_wait=0.01), timeout=5)
    with pytest.raises(ModelAPIError):
        LiteLLMModel(config).query(MESSAGES)


def test_context_length_error_ends_with_exit_context():
    error = Reply(status=400, error_code="context_length_exceeded",
                  error_message="This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.")
    with OpenAIServer([error]) as server:
        with pytest.raises(ContextWindowExceeded) as err:
            model(server).query(MESSAGES)
    assert err.value.exit_status == "exit_context"


def test_max_input_tokens_is_checked_before_sending():
    with OpenAIServer([Reply(content="x")]) as server:
        with pytest.raises(ContextWindowExceeded):
            model(server, max_input_tokens=5).query([{"role": "user", "content": "word " * 100}])
    assert server.requests == []


def test_cost_and_call_limits():
    with OpenAIServer([Reply(content="a", prompt_tokens=1_000_000, completion_tokens=0)]) as server:
        priced = model(server, price_per_million_tokens=(2.0, 8.0), per_instance_cost_limit=3.0)
        priced.query(MESSAGES)
        priced.query(MESSAGES)
        assert priced.stats.instance_cost == pytest.approx(4.0)
        with pytest.raises(CostLimitExceeded):
            priced.query(MESSAGES)
        calls = model(server, per_instance_call_limit=1)
        calls.query(MESSAGES)
        with pytest.raises(CostLimitExceeded):
            calls.query(MESSAGES)


def test_total_cost_limit_is_shared_across_models():
    budget = BatchBudget()
    with OpenAIServer([Reply(content="a", prompt_tokens=1_000_000)]) as server:
        config = dict(name="openai/test-model", api_base=server.url, api_key="k", total_cost_limit=1.5,
                      price_per_million_tokens=(1.0, 0.0), per_instance_cost_limit=0)
        first, second = LiteLLMModel(ModelConfig(**config), budget), LiteLLMModel(ModelConfig(**config), budget)
        first.query(MESSAGES)
        second.query(MESSAGES)
        with pytest.raises(TotalCostLimitExceeded):
            first.query(MESSAGES)


def test_grammar_file_is_sent_as_extra_body(tmp_path):
    grammar = tmp_path / "g.gbnf"
    grammar.write_text('root ::= "x"')
    with OpenAIServer([Reply(content="x")]) as server:
        model(server, grammar_file=str(grammar)).query(MESSAGES)
        model(server, grammar_file=str(grammar), grammar_field="guided_grammar").query(MESSAGES)
    assert server.requests[0]["grammar"] == 'root ::= "x"'
    assert server.requests[1]["guided_grammar"] == 'root ::= "x"'


def test_dotted_grammar_field_nests_into_extra_body_and_keeps_its_keys(tmp_path):
    """vLLM 0.32 reads a grammar only at `structured_outputs.grammar` (a flat key is ignored without an
    error): the dotted field nests, merged with extra_body keys from completion_kwargs at every level."""
    grammar = tmp_path / "g.gbnf"
    grammar.write_text('root ::= "x"')
    extra = {"extra_body": {"top_k": 5, "structured_outputs": {"disable_any_whitespace": True}}}
    with OpenAIServer([Reply(content="x")]) as server:
        m = model(server, grammar_file=str(grammar), grammar_field="structured_outputs.grammar", completion_kwargs=extra)
        m.query(MESSAGES)
        m.query(MESSAGES)
    for request in server.requests:
        assert request["structured_outputs"] == {"disable_any_whitespace": True, "grammar": 'root ::= "x"'}
        assert request["top_k"] == 5 and "grammar" not in request and "guided_grammar" not in request
    assert extra == {"extra_body": {"top_k": 5, "structured_outputs": {"disable_any_whitespace": True}}}  # not mutated


@pytest.mark.parametrize("field", ["", "a..b", ".a", "a.", "a b"])
def test_bad_grammar_field_is_refused(field):
    with pytest.raises(ValueError, match="grammar_field"):
        ModelConfig(name="openai/m", grammar_field=field)


def test_grammar_field_through_a_non_mapping_is_refused_at_start(tmp_path):
    from sweagent_oec.errors import UserError

    grammar = tmp_path / "g.gbnf"
    grammar.write_text('root ::= "x"')
    with OpenAIServer([Reply(content="x")]) as server, pytest.raises(UserError, match="structured_outputs.*not a mapping"):
        model(server, grammar_file=str(grammar), grammar_field="structured_outputs.grammar",
              completion_kwargs={"extra_body": {"structured_outputs": "json"}})


# ---------------------------------------------------------------- malformed replies, deadlines, secrets (issue 13)

import logging  # noqa: E402
import time  # noqa: E402


def _config(server, name="openai/test-model", retries=3, **kw) -> ModelConfig:
    return ModelConfig(name=name, api_base=server.url, per_instance_cost_limit=0, **{"api_key": "sk-test", **kw},
                       retry=RetryConfig(retries=retries, min_wait=0.01, max_wait=0.05))


GARBAGE = [b"<html>502 Bad Gateway</html>", b"", b'{"choices": []}', b'{"id": "x", "choices": [{"index": 0', b"[1, 2]"]


@pytest.mark.parametrize("provider", ["openai", "hosted_vllm"])
@pytest.mark.parametrize("body", GARBAGE)
def test_malformed_replies_are_retried_like_transient_faults(provider, body):
    # Two unreadable replies (not JSON, cut JSON, no choices), then a good one: the call succeeds.
    with OpenAIServer([Reply(raw_body=body), Reply(raw_body=body), Reply(content="ok")]) as server:
        reply = LiteLLMModel(_config(server, f"{provider}/test-model"), budget=BatchBudget()).query(MESSAGES)
    assert reply.content == "ok" and len(server.requests) == 3


def test_malformed_replies_without_end_give_exit_api():
    with OpenAIServer([Reply(raw_body=b"not json at all")]) as server:
        with pytest.raises(ModelAPIError, match="after 4 attempts") as err:
            model(server).query(MESSAGES)
    assert err.value.exit_status == "exit_api" and len(server.requests) == 4


def test_timeout_is_a_deadline_for_the_whole_call():
    # The server trickles its reply one byte every 0.5 s (~200 bytes: ~100 s). httpx's per-read
    # timeout never fires; the call must still end at `timeout`, not when the server is done.
    with OpenAIServer([Reply(content="slow", trickle=0.5)]) as server:
        config = _config(server, retries=0, timeout=2)
        started = time.monotonic()
        with pytest.raises(ModelAPIError, match="timeout=2"):
            LiteLLMModel(config, budget=BatchBudget()).query(MESSAGES)
        assert time.monotonic() - started < 5


def test_a_call_past_its_deadline_is_retried():
    with OpenAIServer([Reply(content="slow", trickle=0.5), Reply(content="fast")]) as server:
        config = _config(server, retries=2, timeout=1.5)
        started = time.monotonic()
        reply = LiteLLMModel(config, budget=BatchBudget()).query(MESSAGES)
        assert reply.content == "fast" and time.monotonic() - started < 5
    assert len(server.requests) == 2


def test_a_provider_error_that_echoes_the_key_is_scrubbed(caplog):
    key = "sk-live-0123456789abcdefSECRET"
    header = "Bearer hdr-token-9876543210ZYXW"
    echo = Reply(status=401, error_message=f"invalid api key {key} (header {header})")
    with OpenAIServer([echo]) as server, caplog.at_level(logging.WARNING):
        config = _config(server, retries=0, api_key=key, completion_kwargs={"extra_headers": {"Authorization": header}})
        with pytest.raises(ModelAPIError) as err:
            LiteLLMModel(config, budget=BatchBudget()).query(MESSAGES)
    assert server.requests and "invalid api key" in str(err.value)
    assert key not in str(err.value) and "hdr-token-9876543210ZYXW" not in str(err.value) and "***" in str(err.value)


def test_retry_warnings_are_scrubbed(caplog):
    key = "sk-retry-0123456789abcdefSECRET"
    with OpenAIServer([Reply(status=500, error_message=f"upstream rejected {key}"), Reply(content="ok")]) as server, \
            caplog.at_level(logging.WARNING):
        config = _config(server, retries=2, api_key=key)
        assert LiteLLMModel(config, budget=BatchBudget()).query(MESSAGES).content == "ok"
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retries and all(key not in text for text in retries) and "upstream rejected ***" in retries[0]


def test_a_reply_that_echoes_the_key_is_scrubbed_before_it_enters_the_history():
    key = "sk-echo-0123456789abcdefSECRET"
    echo = [Reply(content=f"your key is {key}", tool_calls=[tool_call("bash", {"command": f"echo {key}"}, "call_1")])]
    with OpenAIServer(echo) as server:
        reply = LiteLLMModel(_config(server, api_key=key), budget=BatchBudget()).query(MESSAGES)
    assert reply.content == "your key is ***"
    assert reply.tool_calls[0]["function"]["arguments"] == '{"command": "echo ***"}'
