"""Any chat model litellm reaches: `hosted_vllm/...` + api_base (vLLM), `openai/...`, `anthropic/...`.

Retries (tenacity, exponential backoff with jitter) on rate limits, timeouts, connection errors,
5xx and malformed replies; never on auth or bad-request errors. `timeout` is a deadline for each
attempt as a whole. Error texts are scrubbed of known secrets. Counts tokens (cache reads and
writes too) and cost (`pricing.py`: a model with a cost limit and no price refuses to start);
enforces the per-instance cost/call limits, `max_input_tokens`, and the batch's `total_cost_limit`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
import tenacity  # noqa: E402

from sweagent_oec.config import ModelConfig  # noqa: E402
from sweagent_oec.data.trajectory import ModelStats  # noqa: E402
from sweagent_oec.errors import UserError  # noqa: E402
from sweagent_oec.exits import (  # noqa: E402
    ContextWindowExceeded,
    CostLimitExceeded,
    ModelAPIError,
    TotalCostLimitExceeded,
)
from sweagent_oec.models.base import BATCH_BUDGET, BatchBudget, ModelReply, provider_messages  # noqa: E402
from sweagent_oec.models.pricing import cost, estimate_usage, require_price, usage_of  # noqa: E402
from sweagent_oec.secrets import remember, remember_config, scrub  # noqa: E402

log = logging.getLogger(__name__)
litellm.suppress_debug_info = True

RETRYABLE = (
    litellm.RateLimitError,
    litellm.Timeout,
    litellm.APIConnectionError,
    litellm.InternalServerError,
    litellm.ServiceUnavailableError,
    litellm.BadGatewayError,
)


class _Transient(Exception):
    """A fault worth another attempt: rate limit, 5xx, lost connection, deadline, a malformed reply."""


def _short(e: BaseException, limit: int = 300) -> str:
    """`Type: message`, cut, with known secrets scrubbed (a provider error may echo the key)."""
    return scrub(f"{type(e).__name__}: {str(e)[:limit]}")


# Calls run on one event loop in a daemon thread: `asyncio.wait_for` gives each call a deadline
# for the whole reply (httpx's timeout is per read: a server trickling bytes never trips it) and,
# when it passes, cancels the request and closes its connection. One loop, so litellm's cached
# async clients are never shared across loops; a forked child makes its own.
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_loop_lock = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid():
            _loop, _loop_pid = asyncio.new_event_loop(), os.getpid()
            threading.Thread(target=_loop.run_forever, name="oec-model-calls", daemon=True).start()
        return _loop


def run_with_deadline(coroutine, timeout: float):
    """Await `coroutine` on the model-call loop; done within `timeout` seconds (the whole call: a server
    that trickles its reply cannot hold it) or cancelled, its connection closed."""
    future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, timeout), _event_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()  # Ctrl-C or a stopping batch: the request does not outlive the caller
        raise


_routers: dict[tuple, "litellm.Router"] = {}
_routers_lock = threading.Lock()


def replica_router(config: ModelConfig) -> "litellm.Router":
    """One litellm Router per set of replicas and process, shared by every instance, so a replica
    that stopped answering is cooled down for all of them. The Router only spreads and fails over:
    retries stay with this module's policy (tenacity), deadlines with `timeout`."""
    key = config.api_key.get_secret_value() if config.api_key is not None else None
    ident = (config.name, tuple(config.api_bases), key)
    with _routers_lock:
        if ident not in _routers:
            params = {"model": config.name, **({"api_key": key} if key is not None else {})}
            _routers[ident] = litellm.Router(
                model_list=[{"model_name": config.name, "litellm_params": {**params, "api_base": base}}
                            for base in config.api_bases],
                num_retries=0, allowed_fails=0, cooldown_time=30, routing_strategy="simple-shuffle")
        return _routers[ident]


def with_nested(body: dict, path: list[str], value) -> dict:
    """A copy of `body` with `value` at the dotted `path` ("structured_outputs.grammar"), keeping its
    other keys at every level; a non-dict in the way is an error, not silently replaced."""
    head, *rest = path
    if not rest:
        return {**body, head: value}
    inner = body.get(head, {})
    if not isinstance(inner, dict):
        raise UserError(f"grammar_field {'.'.join(path)}: extra_body's {head!r} is {type(inner).__name__}, not a mapping")
    return {**body, head: with_nested(inner, rest, value)}


class LiteLLMModel:
    def __init__(self, config: ModelConfig, budget: BatchBudget = BATCH_BUDGET):
        self.config = config
        self.name = config.name
        self.stats = ModelStats()
        self.budget = budget
        self.price = require_price(config)  # None: unpriced and unlimited, counted as $0
        # Scrubbed from errors and logs even when this config did not come through load_config.
        remember(config.api_key)
        remember_config(config.completion_kwargs)
        self.router = replica_router(config) if config.api_bases else None
        self.grammar = None
        if config.grammar_file:
            try:
                self.grammar = Path(config.grammar_file).read_text()
            except OSError as e:
                raise UserError(f"grammar_file {config.grammar_file}: {e.strerror}") from None
            # A grammar_field that cannot be merged into completion_kwargs' extra_body fails here, not at step 1.
            with_nested(config.completion_kwargs.get("extra_body") or {}, config.grammar_field.split("."), self.grammar)

    # ------------------------------------------------------------ limits

    def _check_limits(self, messages: list[dict]) -> None:
        c = self.config
        if c.total_cost_limit and self.budget.cost >= c.total_cost_limit:
            raise TotalCostLimitExceeded(f"batch cost {self.budget.cost:.2f} reached total_cost_limit {c.total_cost_limit}")
        if c.per_instance_cost_limit and self.stats.instance_cost >= c.per_instance_cost_limit:
            raise CostLimitExceeded(f"instance cost {self.stats.instance_cost:.2f} reached {c.per_instance_cost_limit}")
        if c.per_instance_call_limit and self.stats.api_calls >= c.per_instance_call_limit:
            raise CostLimitExceeded(f"{self.stats.api_calls} calls reached per_instance_call_limit")
        if c.max_input_tokens:
            tokens = litellm.token_counter(model=self.name, messages=messages)
            if tokens > c.max_input_tokens:
                raise ContextWindowExceeded(f"{tokens} input tokens exceed max_input_tokens={c.max_input_tokens}")

    # ------------------------------------------------------------ calls

    def _completion_kwargs(self, messages: list[dict], tools: list[dict] | None) -> dict:
        c = self.config
        messages = provider_messages(messages)
        if c.convert_system_to_user:
            messages = [{**m, "role": "user"} if m.get("role") == "system" else m for m in messages]
        kwargs = dict(model=self.name, messages=messages, temperature=c.temperature, timeout=c.timeout)
        if c.stop:
            kwargs["stop"] = list(c.stop)
        if c.top_p is not None:
            kwargs["top_p"] = c.top_p
        if c.max_output_tokens:
            kwargs["max_tokens"] = c.max_output_tokens
        if c.api_base:
            kwargs["api_base"] = c.api_base
        if c.api_key is not None:
            kwargs["api_key"] = c.api_key.get_secret_value()
        if c.api_version:
            kwargs["api_version"] = c.api_version
        if tools:
            kwargs["tools"] = tools
            # litellm 1.106.2 routes any call with tools through its MCP handler, which needs the
            # optional `mcp` package; this toolkit never passes MCP tools.
            kwargs["_skip_mcp_handler"] = True
        kwargs.update(c.completion_kwargs)
        if self.grammar is not None:
            kwargs["extra_body"] = with_nested(kwargs.get("extra_body") or {}, c.grammar_field.split("."), self.grammar)
        return kwargs

    def _call(self, kwargs: dict):
        """One completion, retried (tenacity) on transient faults; `timeout` bounds each attempt whole."""
        retry = self.config.retry
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(retry.retries + 1),
            wait=tenacity.wait_random_exponential(multiplier=retry.min_wait, max=retry.max_wait, min=retry.min_wait / 2),
            retry=tenacity.retry_if_exception_type(_Transient),
            before_sleep=lambda state: log.warning(
                "%s: %s; retrying in %.1fs (%d/%d)", self.name, state.outcome.exception(),
                state.next_action.sleep, state.attempt_number, retry.retries),
            reraise=True,
        )
        try:
            return retrying(self._attempt, kwargs)
        except _Transient as e:
            raise ModelAPIError(f"{e} (after {retry.retries + 1} attempts)") from None

    def _attempt(self, kwargs: dict):
        """One request, done within `timeout` seconds or cancelled; every error is sorted and scrubbed."""
        try:
            call = self.router.acompletion(**kwargs) if self.router else litellm.acompletion(**kwargs, num_retries=0)
            response = run_with_deadline(call, self.config.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise _Transient(f"Timeout: no complete reply within timeout={self.config.timeout:g}s") from None
        except litellm.ContextWindowExceededError as e:
            raise ContextWindowExceeded(_short(e)) from None
        except (litellm.AuthenticationError, litellm.PermissionDeniedError, litellm.NotFoundError) as e:
            raise ModelAPIError(_short(e)) from None
        except litellm.BadRequestError as e:
            text = str(e).lower()
            if "context" in text and ("length" in text or "window" in text):
                raise ContextWindowExceeded(_short(e)) from None
            raise ModelAPIError(_short(e)) from None
        except RETRYABLE as e:
            raise _Transient(_short(e)) from None
        except litellm.APIError as e:
            # A reply litellm could not read (not JSON, no choices) comes as a bare APIError: a
            # transient fault like a 5xx; a 4xx the server meant is not retried.
            status = getattr(e, "status_code", None)
            if isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429):
                raise ModelAPIError(_short(e)) from None
            raise _Transient(_short(e)) from None
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise _Transient("malformed reply: no choices[0].message")
        return response

    def query(self, messages: list[dict], tools: list[dict] | None = None) -> ModelReply:
        self._check_limits(messages)
        response = self._call(self._completion_kwargs(messages, tools))
        choice = response.choices[0].message
        usage = usage_of(response)
        if self.price is not None and usage.input_tokens == 0:  # a server that reports no usage is not free
            usage = estimate_usage(self.name, provider_messages(messages), tools, choice)
        spent = cost(self.price, usage) if self.price is not None else 0.0
        self.stats = self.stats.add(
            ModelStats(instance_cost=spent, tokens_sent=usage.input_tokens, tokens_received=usage.output_tokens,
                       api_calls=1, cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens)
        )
        self.budget.add(spent)
        # A reply is hostile too (a proxy may echo headers): known secrets never enter the history.
        tool_calls = None
        if getattr(choice, "tool_calls", None):
            tool_calls = [
                {"id": tc.id, "type": "function",
                 "function": {"name": tc.function.name, "arguments": scrub(tc.function.arguments)}}
                for tc in choice.tool_calls
            ]
        extra = {}
        if self.router is not None:  # which replica answered this step
            extra["api_base"] = (getattr(response, "_hidden_params", None) or {}).get("api_base")
        if getattr(choice, "reasoning_content", None):
            extra["reasoning_content"] = scrub(choice.reasoning_content)
        return ModelReply(content=scrub(choice.content or ""), tool_calls=tool_calls, extra=extra)
