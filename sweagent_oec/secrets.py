"""Secrets: which config values are secret, redacting them in what is written, scrubbing known ones from text.

Two rules (DESIGN section 6b: no secret reaches any output file):

- `redact(data)`: a string under a secret-looking key (one of its words is key, token, secret,
  password, authorization, ...; any nesting, `completion_kwargs.extra_headers` and
  `env.env_variables` included), or a string that looks like a provider key (`sk-...`, `hf_...`,
  `Bearer ...`), becomes "***" in what is written, unless it is a `$VAR` / `${VAR}` reference,
  which is kept as written: it names the secret without holding it. So do the password and the
  secret-looking query parameters of a URL (`https://u:***@host/v1?key=***`).
- `scrub(text)`: the secret values this process knows (`remember`ed from the resolved config, and
  the values of API-key-like environment variables) are replaced by "***". Error messages, exit
  reasons and log lines go through it before they are written or printed; `install_log_scrubber`
  does it for every log record of the process.

The bottom layer: imports nothing of the project.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

REDACTED = "***"
#: Shorter values are not scrubbed from free text: they would blank ordinary words.
MIN_SECRET_LENGTH = 8

_REFERENCE = re.compile(r"^\$\{?[A-Za-z_][A-Za-z0-9_]*\}?$")
#: Words that make a key secret-looking (a word may also end with one: apikey, accesstoken).
_SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "authorization", "credential", "credentials",
                 "cookie", "bearer")
_SECRET_EXACT = {"auth"}  # not "pwd": $PWD is the working directory
#: Values that are provider keys whatever their key is called.
_SECRET_VALUE = re.compile(
    r"^(?:Bearer\s+\S{8,}|Basic\s+\S{8,}|sk-[A-Za-z0-9_-]{16,}|ghp_[A-Za-z0-9]{20,}|gho_[A-Za-z0-9]{20,}"
    r"|github_pat_\w{20,}|hf_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|glpat-[A-Za-z0-9_-]{20,}"
    r"|AIza[0-9A-Za-z_-]{30,})$"
)

#: Credentials inside a URL (`api_base`): the password of `user:password@host`, and the value of a
#: query parameter with a secret-looking name (`?key=...`, `&access_token=...`).
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^/@:\s]*:)([^/@\s]+)(@)", re.I)
_URL_PARAM = re.compile(r"([?&])([^=&#\s]+)=([^&#\s]*)")

_known: set[str] = set()
_lock = threading.Lock()


def is_reference(value: Any) -> bool:
    """`$VAR` or `${VAR}`: a name for a secret, safe to write."""
    return isinstance(value, str) and bool(_REFERENCE.match(value.strip()))


def _words(key: str) -> list[str]:
    key = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)  # camelCase -> camel_Case
    return [w for w in re.split(r"[^A-Za-z0-9]+", key.lower()) if w]


def is_secret_key(key: Any) -> bool:
    """`api_key`, `Authorization`, `X-Api-Key`, `HF_TOKEN`, `apiKey`, `db_password`...; not `max_input_tokens`."""
    return any(w in _SECRET_EXACT or w.endswith(_SECRET_WORDS) for w in _words(str(key)))


def looks_like_secret(value: Any) -> bool:
    """A string shaped like a provider key or an auth header, whatever key holds it."""
    return isinstance(value, str) and bool(_SECRET_VALUE.match(value.strip()))


def url_secrets(value: str) -> list[str]:
    """The credentials a URL carries (see `_URL_PASSWORD`, `_URL_PARAM`)."""
    found = []
    if "://" not in value:
        return found
    match = _URL_PASSWORD.match(value)
    if match:
        found.append(match.group(2))
    found += [m.group(3) for m in _URL_PARAM.finditer(value) if m.group(3) and is_secret_key(m.group(2))]
    return found


def _redact_url(value: str) -> str:
    if "://" not in value:
        return value
    value = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), value)
    return _URL_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}={REDACTED}" if is_secret_key(m.group(2)) and m.group(3)
                          else m.group(0), value)


def redact(data: Any, secret: bool = False) -> Any:
    """A copy of `data` with secret strings replaced by "***" (`$VAR` references kept)."""
    if isinstance(data, dict):
        return {k: redact(v, secret or is_secret_key(k)) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact(v, secret) for v in data]
    if isinstance(data, str) and (secret or looks_like_secret(data)) and not is_reference(data):
        return REDACTED
    if isinstance(data, str):
        return _redact_url(data)
    if hasattr(data, "get_secret_value"):  # pydantic SecretStr
        return REDACTED
    return data


# ---------------------------------------------------------------- known values


def remember(value: Any) -> None:
    """Scrub this value (and the key of "Bearer <key>") from text from now on."""
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return
    parts = {value.strip()}
    words = value.split()
    if len(words) == 2:  # "Bearer <key>", "Token <key>": the key may be echoed alone
        parts.add(words[1])
    with _lock:
        _known.update(p for p in parts if len(p) >= MIN_SECRET_LENGTH)


def remember_config(data: Any, secret: bool = False) -> None:
    """Remember every secret string in a resolved config (the same ones `redact` blanks)."""
    if isinstance(data, dict):
        for k, v in data.items():
            remember_config(v, secret or is_secret_key(k))
    elif isinstance(data, (list, tuple)):
        for v in data:
            remember_config(v, secret)
    elif hasattr(data, "get_secret_value") or (isinstance(data, str) and (secret or looks_like_secret(data))):
        if not is_reference(data):
            remember(data)
    elif isinstance(data, str):
        for value in url_secrets(data):
            remember(value)


def env_secrets() -> set[str]:
    """Values of environment variables whose name says they hold a secret (OPENAI_API_KEY, HF_TOKEN...)."""
    found = set()
    for name, value in list(os.environ.items()):
        if any(w in _SECRET_EXACT or w.endswith(_SECRET_WORDS) for w in name.lower().split("_") if w):
            words = value.split()
            found.update(p for p in {value.strip(), *(words[1:] if len(words) == 2 else [])} if len(p) >= MIN_SECRET_LENGTH)
    return found


def known_secrets() -> list[str]:
    """Longest first, so a value that contains another is replaced whole."""
    with _lock:
        values = set(_known)
    return sorted(values | env_secrets(), key=len, reverse=True)


def scrub(text: Any) -> Any:
    """`text` with every known secret value replaced by "***" (non-strings are returned as they are)."""
    if not isinstance(text, str) or not text:
        return text
    for value in known_secrets():
        if value in text:
            text = text.replace(value, REDACTED)
    return text


# ---------------------------------------------------------------- logs

_installed = False
_base_factory = logging.getLogRecordFactory()


def _scrubbing_factory(*args, **kwargs) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it to the handler to report
        return record
    clean = scrub(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        # Formatters use exc_text when it is set: the traceback is printed scrubbed.
        record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
    return record


def install_log_scrubber() -> None:
    """Scrub known secrets from every log record the process makes, whatever logger or handler."""
    global _installed, _base_factory
    with _lock:
        if _installed:
            return
        _base_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_scrubbing_factory)
        _installed = True
