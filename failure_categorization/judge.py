"""The LLM judge: one litellm call per trajectory, a structured answer, and a tolerant reader.

The answer schema is a pydantic model sent as `response_format` (JSON schema) where the model
supports it; whatever comes back is read by `parse_failure` / `parse_rubric`, which also accept
JSON inside prose or code fences and a bare category name. Unknown categories become `other`
and are flagged. Rate limits, 5xx, timeouts and dropped connections are retried with backoff;
auth errors and unknown models are not (every later call would fail the same way).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from failure_categorization.taxonomy import OTHER, Taxonomy
from sweagent_oec.errors import UserError

log = logging.getLogger(__name__)


class JudgeConfig(BaseModel):
    """Everything about the judge call. The key itself is never stored: only the variable's name."""

    model_config = ConfigDict(extra="forbid")

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout: float = 120.0
    retries: int = Field(4, ge=0)
    backoff: float = Field(2.0, ge=0)  # seconds before the first retry, doubled each time
    response_format: Literal["auto", "json_schema", "json_object", "none"] = "auto"

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def identity(self) -> dict:
        """What changes the answer (for the cache key): not the server address, never the key."""
        return self.model_dump(include={"model", "temperature", "max_tokens", "response_format"})


class JudgeFatalError(Exception):
    """The judge cannot answer anything (bad key, unknown model): stop the run."""


class JudgeCallError(Exception):
    """This one call failed after its retries; the trajectory is recorded as not judged."""


def check_api_key(cfg: JudgeConfig) -> None:
    """Fail before anything is written when the judge model needs a key that is not there."""
    import litellm

    if cfg.api_key_env:
        if not os.environ.get(cfg.api_key_env):
            raise UserError(f"judge API key variable {cfg.api_key_env} is not set; export it or drop --judge-api-key-env")
        return
    missing = litellm.validate_environment(model=cfg.model, api_base=cfg.api_base).get("missing_keys", [])
    missing = [k for k in missing if not (cfg.api_base and k.endswith("_API_BASE"))]
    if missing:
        raise UserError(
            f"judge model {cfg.model} needs {', '.join(missing)}, which is not set; export it, pass "
            "--judge-api-key-env VAR, or use --prerules-only to categorize without a judge"
        )


# --- answer schemas -------------------------------------------------------------------------


def failure_schema(taxonomy: Taxonomy) -> type[BaseModel]:
    """The schema the judge is asked to fill: the category is one of the taxonomy's names."""
    return create_model(
        "FailureVerdict",
        category=(Literal[tuple(taxonomy.names)], ...),
        rationale=(str, ...),
        confidence=(float, Field(..., description="0 (a guess) to 1 (certain)")),
    )


def rubric_schema(taxonomy: Taxonomy) -> type[BaseModel]:
    scale = taxonomy.rubric.scale
    scores = create_model(
        "RubricScores",
        **{c.name: (int, Field(..., description=f"{scale.min}-{scale.max}: {c.description}")) for c in taxonomy.rubric.criteria},
    )
    return create_model("RubricVerdict", scores=(scores, ...), rationale=(str, ...), confidence=(float, ...))


# --- the call -------------------------------------------------------------------------------


@dataclass
class JudgeReply:
    content: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    priced: bool = True


_unpriced_warned: set[str] = set()
_warn_lock = threading.Lock()


def _cost(response, model: str) -> tuple[float, bool]:
    import litellm

    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0), True
    except Exception:  # litellm raises for models it has no price for (e.g. a local server)
        with _warn_lock:
            if model not in _unpriced_warned:
                _unpriced_warned.add(model)
                log.warning("litellm has no price for judge model %s: its cost is counted as 0", model)
        return 0.0, False


def _response_format(cfg: JudgeConfig, schema: type[BaseModel]) -> dict | None:
    import litellm

    mode = cfg.response_format
    if mode == "auto":
        mode = "json_schema" if litellm.supports_response_schema(model=cfg.model) else "none"
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()}}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def ask(messages: list[dict], cfg: JudgeConfig, schema: type[BaseModel]) -> JudgeReply:
    """One judge answer. The same call path as the run loop's models: `timeout` bounds the whole
    call, transient faults are retried by tenacity with exponential back-off."""
    import asyncio

    import litellm
    import tenacity

    from sweagent_oec.models.litellm_model import run_with_deadline

    retryable = (
        litellm.RateLimitError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
        litellm.Timeout,
        litellm.APIConnectionError,
        asyncio.TimeoutError,
        TimeoutError,
    )
    fatal = (litellm.AuthenticationError, litellm.PermissionDeniedError, litellm.NotFoundError)
    response_format = _response_format(cfg, schema)
    while True:
        kwargs = dict(model=cfg.model, messages=messages, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                      num_retries=0, api_base=cfg.api_base, api_key=cfg.api_key())
        if response_format:
            kwargs["response_format"] = response_format
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(cfg.retries + 1),
            wait=tenacity.wait_exponential(multiplier=cfg.backoff, max=max(cfg.backoff, 1.0) * 2 ** cfg.retries),
            retry=tenacity.retry_if_exception_type(retryable), reraise=True)
        try:
            response = retrying(lambda: run_with_deadline(litellm.acompletion(**kwargs), cfg.timeout))
        except fatal as e:
            raise JudgeFatalError(f"judge {cfg.model} refused the request ({type(e).__name__}): {_short(e)}") from e
        except litellm.BadRequestError as e:
            if response_format is None:
                raise JudgeCallError(f"bad request: {_short(e)}") from e
            # Some OpenAI-compatible servers reject structured output: ask again in plain text.
            log.warning("judge rejected response_format (%s); asking without it", _short(e))
            response_format = None
            continue
        except retryable as e:
            reason = _short(e) or f"no answer within timeout={cfg.timeout:g}s"
            raise JudgeCallError(f"{type(e).__name__} after {cfg.retries + 1} attempts: {reason}") from e
        usage = getattr(response, "usage", None)
        cost, priced = _cost(response, cfg.model)
        return JudgeReply(
            content=response.choices[0].message.content or "",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            cost=cost,
            priced=priced,
        )


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:200]


# --- tolerant reading of answers ------------------------------------------------------------


def extract_json(text: str) -> dict | None:
    """The answer's JSON object: the whole text, a fenced block, or the first object in prose."""
    text = text.strip()
    candidates = [text] + re.findall(r"```(?:json|JSON)?\s*(.*?)```", text, flags=re.S)
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text[match.start():])
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _normalize(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().strip("`'\"*.").lower())


def _confidence(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if 1 < number <= 100:  # a percentage
        number /= 100
    return min(max(number, 0.0), 1.0)


def _bare_category(text: str, names: list[str]) -> str | None:
    """The earliest category name written in prose (`infinite loop`, `infinite_loop`, ...)."""
    best: tuple[int, str] | None = None
    for name in names:
        pattern = r"(?<![a-z])" + r"[\s_\-]+".join(map(re.escape, name.split("_"))) + r"(?![a-z])"
        match = re.search(pattern, text, flags=re.I)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), name)
    return best[1] if best else None


@dataclass
class Verdict:
    category: str | None = None
    rationale: str = ""
    confidence: float | None = None
    scores: dict[str, int | None] = field(default_factory=dict)
    #: ok | unknown_category (answered a name not in the taxonomy) | unparseable
    status: str = "ok"
    raw_category: str | None = None


def parse_failure(text: str, names: list[str]) -> Verdict:
    data = extract_json(text)
    if data is not None and data.get("category") is not None:
        raw = str(data["category"])
        category = _normalize(raw)
        verdict = Verdict(rationale=str(data.get("rationale", "")).strip(), confidence=_confidence(data.get("confidence")))
        if category in names:
            verdict.category = category
        else:
            verdict.category, verdict.status, verdict.raw_category = OTHER, "unknown_category", raw
        return verdict
    if _normalize(text) in names:
        return Verdict(category=_normalize(text))
    bare = _bare_category(text, names)
    if bare:
        return Verdict(category=bare, rationale=" ".join(text.split())[:500])
    return Verdict(category=OTHER, status="unparseable", rationale=" ".join(text.split())[:500])


def parse_rubric(text: str, taxonomy: Taxonomy) -> Verdict:
    scale = taxonomy.rubric.scale
    data = extract_json(text) or {}
    given = data.get("scores") if isinstance(data.get("scores"), dict) else data
    scores: dict[str, int | None] = {}
    for criterion in taxonomy.rubric.criteria:
        try:
            value = int(round(float(given.get(criterion.name))))
        except (TypeError, ValueError):
            value = None
        scores[criterion.name] = value if value is not None and scale.min <= value <= scale.max else None
    status = "ok" if any(v is not None for v in scores.values()) else "unparseable"
    rationale = str(data.get("rationale", "")).strip() if data else " ".join(text.split())[:500]
    return Verdict(scores=scores, rationale=rationale, confidence=_confidence(data.get("confidence")), status=status)


def parse_paper(text: str, names: list[str]) -> Verdict:
    """The paper's answer format: free text whose last non-empty line is the category.

    The last line is read after trimming whitespace, markdown emphasis, quotes, a trailing period
    and a `Category:` label, case-insensitively, with spaces or hyphens read as underscores. A name
    not in the taxonomy is `other` (`unknown_category`, the line kept in `raw_category`); an empty
    answer is `other` (`empty`). The text above the last line is the rationale.
    """
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    if not lines:
        return Verdict(category=OTHER, status="empty")
    raw = lines[-1].strip()
    name = _normalize(re.sub(r"^[\s*_`#>]*(final\s+)?category\s*[:\-]\s*", "", raw, flags=re.I))
    rationale = "\n".join(lines[:-1]).strip()
    if name in names:
        return Verdict(category=name, rationale=rationale)
    return Verdict(category=OTHER, rationale=rationale, status="unknown_category", raw_category=raw)
