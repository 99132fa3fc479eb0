"""What a model call costs, failing closed.

A price is dollars per million tokens of four kinds: uncached input, output, cached input read
and cache write (Anthropic's prompt caching; OpenAI reports cached reads only). Where a model's
price comes from, first match wins:

1. `price_per_million_tokens` in the model's config;
2. `litellm_model_registry` in the model's config: a JSON file in litellm's `model_cost` format
   (SWE-agent's key for the same purpose);
3. SHIPPED_PRICES below: the models the shipped configs name, at their list prices, so costs do
   not depend on what the pinned litellm's price map happens to hold (1.106.2 has no
   `anthropic/claude-3-7-sonnet-20250219` nor `anthropic/claude-sonnet-4-20250514`);
4. litellm's price map.

A model with a cost limit (`per_instance_cost_limit` or `total_cost_limit` > 0) and no price
refuses to start: counting its calls as $0 would let the limit never fire. A model without limits
and without a price (a local vLLM student) counts $0, and says so once.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweagent_oec.config import ModelConfig, Price
from sweagent_oec.errors import UserError

log = logging.getLogger(__name__)

#: Dollars per million tokens (input, output, cache read, cache write), list prices as of 2026-11.
#: Anthropic: cache writes (5-minute TTL) cost 1.25x input, reads 0.1x. OpenAI: cached input is
#: half price (gpt-4o, gpt-4o-mini); it has no cache writes (priced as input, never reported).
SHIPPED_PRICES: dict[str, Price] = {
    "claude-3-7-sonnet-20250219": Price(input=3.0, output=15.0, cache_read=0.30, cache_write=3.75),
    "claude-sonnet-4-20250514": Price(input=3.0, output=15.0, cache_read=0.30, cache_write=3.75),
    "gpt-4o": Price(input=2.50, output=10.0, cache_read=1.25, cache_write=2.50),
    "gpt-4o-mini": Price(input=0.15, output=0.60, cache_read=0.075, cache_write=0.15),
}

#: Providers whose prefix names the same model as the bare name (litellm's own routing).
_SAME_MODEL_PREFIXES = ("anthropic/", "openai/")
#: Names that are not litellm models (no calls, no cost).
NOT_LITELLM = ("replay", "oracle", "switching")

_warned: set = set()
_warn_lock = threading.Lock()


@dataclass(frozen=True)
class Usage:
    """One call's tokens. `input_tokens` is all input, cached or not (SWE-agent's tokens_sent)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def uncached_input_tokens(self) -> int:
        return max(0, self.input_tokens - self.cache_read_tokens - self.cache_write_tokens)


def _int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def usage_of(response: Any) -> Usage:
    """The usage of a litellm response. litellm puts Anthropic's cache reads and writes into
    `prompt_tokens` (1.106.2: input_tokens + cache_read + cache_creation) and reports them as
    `cache_read_input_tokens` / `cache_creation_input_tokens`; OpenAI's cached reads are
    `prompt_tokens_details.cached_tokens`, within prompt_tokens."""
    usage = getattr(response, "usage", None)
    details = getattr(usage, "prompt_tokens_details", None)
    return Usage(
        input_tokens=_int(getattr(usage, "prompt_tokens", 0)),
        output_tokens=_int(getattr(usage, "completion_tokens", 0)),
        cache_read_tokens=_int(getattr(usage, "cache_read_input_tokens", 0) or getattr(details, "cached_tokens", 0)),
        cache_write_tokens=_int(getattr(usage, "cache_creation_input_tokens", 0)
                                or getattr(details, "cache_creation_tokens", 0)),
    )


def estimate_usage(name: str, messages: list[dict], tools: list[dict] | None, reply: Any) -> Usage:
    """Tokens counted here (litellm's tokenizer for the model) for a reply whose server reported no
    usage: a priced model's calls are never counted as free."""
    import litellm

    sent = litellm.token_counter(model=name, messages=messages, tools=tools or None)
    text = (getattr(reply, "content", None) or "") + json.dumps(
        [tc.model_dump() if hasattr(tc, "model_dump") else tc for tc in getattr(reply, "tool_calls", None) or []])
    with _warn_lock:
        if ("usage", name) not in _warned:
            _warned.add(("usage", name))
            log.warning("%s: the server reported no token usage; counting tokens locally to price the calls", name)
    return Usage(input_tokens=max(1, int(sent)), output_tokens=int(litellm.token_counter(model=name, text=text)))


def cost(price: Price, usage: Usage) -> float:
    read = price.input if price.cache_read is None else price.cache_read
    write = price.input if price.cache_write is None else price.cache_write
    return (usage.uncached_input_tokens * price.input + usage.output_tokens * price.output
            + usage.cache_read_tokens * read + usage.cache_write_tokens * write) / 1e6


def _names(name: str) -> list[str]:
    out = [name]
    for prefix in _SAME_MODEL_PREFIXES:
        if name.startswith(prefix):
            out.append(name[len(prefix):])
    return out


def _from_litellm_entry(entry: dict) -> Price | None:
    """A litellm `model_cost` entry (dollars per token) as a Price (dollars per million)."""
    if not isinstance(entry, dict) or entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
        return None

    def per_million(key: str) -> float | None:
        value = entry.get(key)
        return None if value is None else float(value) * 1e6

    return Price(input=per_million("input_cost_per_token"), output=per_million("output_cost_per_token"),
                 cache_read=per_million("cache_read_input_token_cost"),
                 cache_write=per_million("cache_creation_input_token_cost"))


def registry_price(path: str, name: str) -> Price | None:
    try:
        registry = json.loads(Path(path).read_text())
    except OSError as e:
        raise UserError(f"litellm_model_registry {path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"litellm_model_registry {path} is not JSON: {e}") from None
    if not isinstance(registry, dict):
        raise UserError(f"litellm_model_registry {path} must map model names to litellm price entries")
    for candidate in _names(name):
        if candidate in registry:
            try:
                price = _from_litellm_entry(registry[candidate])
            except (TypeError, ValueError):
                raise UserError(f"litellm_model_registry {path}: the prices of {candidate} must be "
                                "non-negative numbers (dollars per token)") from None
            if price is None:
                raise UserError(f"litellm_model_registry {path}: the entry for {candidate} needs "
                                "input_cost_per_token and output_cost_per_token")
            return price
    return None


def litellm_price(name: str) -> Price | None:
    import litellm

    try:
        info = litellm.get_model_info(model=name)
    except Exception:  # litellm raises for models it does not know (e.g. a local vLLM model)
        return None
    return _from_litellm_entry(dict(info))


def price_for(config: ModelConfig) -> Price | None:
    """The model's price, or None when nothing knows it (see the module doc for the order)."""
    if config.price_per_million_tokens is not None:
        return config.price_per_million_tokens
    if config.litellm_model_registry:
        price = registry_price(config.litellm_model_registry, config.name)
        if price is not None:
            return price
    for candidate in _names(config.name):
        if candidate in SHIPPED_PRICES:
            return SHIPPED_PRICES[candidate]
    return litellm_price(config.name)


def cost_limits(config: ModelConfig) -> list[str]:
    return [f"{key}={getattr(config, key):g}" for key in ("per_instance_cost_limit", "total_cost_limit")
            if getattr(config, key)]


def require_price(config: ModelConfig) -> Price | None:
    """The price; raises (one line naming price_per_million_tokens) when a cost limit needs one."""
    price = price_for(config)
    if price is None:
        limits = cost_limits(config)
        if limits:
            raise UserError(
                f"model {config.name} has a cost limit ({', '.join(limits)}) but no known price, so the limit "
                "could never fire: give it price_per_million_tokens: [input, output] (dollars per million tokens), "
                "or set per_instance_cost_limit: 0 and total_cost_limit: 0")
        with _warn_lock:
            if config.name not in _warned:
                _warned.add(config.name)
                log.warning("no price for %s and no cost limit: its calls count $0 "
                            "(set price_per_million_tokens to count them)", config.name)
    return price


def litellm_configs(model: ModelConfig) -> list[ModelConfig]:
    """Every litellm model a run config may call: the model, both sides of a switching model, and
    the judges of its switching criteria."""
    configs = list(model.models or [model])
    pending = [model.switching_criteria] if model.switching_criteria is not None else []
    while pending:
        criteria = pending.pop()
        if getattr(criteria, "judge", None) is not None:
            configs.append(criteria.judge)
        pending.extend(getattr(criteria, "criteria", None) or [])
    return [c for c in configs if c.name not in NOT_LITELLM]


def check_prices(model: ModelConfig) -> None:
    """Before a batch starts: a cost limit over an unpriced model refuses the run in one line."""
    for config in litellm_configs(model):
        require_price(config)
