"""History processors: what part of the history the model sees, and how it is sent.

The history is a list of HistoryItem-shaped dicts (role, content, message_type, bookkeeping).
Processors return a new list and never change the stored history.
"""

from __future__ import annotations

import copy

from sweagent_oec.config import HistoryProcessorConfig


def last_n_observations(history: list[dict], n: int) -> list[dict]:
    """Elide all but the last `n` observations; the task statement (first user message) stays."""
    observations = [
        i for i, item in enumerate(history)
        if item.get("message_type") == "observation" and item.get("role") in ("user", "tool")
    ]
    task = next((i for i, item in enumerate(history) if item.get("role") == "user"), None)
    old = [i for i in observations if i != task][: -n or None] if n > 0 else [i for i in observations if i != task]
    if not old:
        return history
    out = list(history)
    for i in old:
        lines = str(out[i].get("content", "")).count("\n") + 1
        out[i] = {**out[i], "content": f"Old environment output: ({lines} lines omitted)"}
    return out


def cache_control(history: list[dict], last_n_messages: int) -> list[dict]:
    """Mark the last n user/tool messages for Anthropic's prompt caching."""
    out = list(history)
    marked = 0
    for i in range(len(out) - 1, -1, -1):
        if marked >= last_n_messages:
            break
        if out[i].get("role") in ("user", "tool"):
            item = copy.copy(out[i])
            text = item.get("content")
            if isinstance(text, str):
                item["content"] = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]
            out[i] = item
            marked += 1
    return out


def apply_processors(history: list[dict], processors: list[HistoryProcessorConfig]) -> list[dict]:
    for p in processors:
        history = last_n_observations(history, p.n) if p.type == "last_n_observations" else cache_control(history, p.last_n_messages)
    return history


def to_messages(history: list[dict]) -> list[dict]:
    """A step's `query`: the items the model is sent, in SWE-agent's history-item shape (`role`,
    `content`, `agent`, `message_type`; `thought`, `action` and `tool_calls` on assistant items;
    `tool_call_ids` as a list on tool results), so SWE-agent's and SWE-smith's tools read it. Extra keys
    of this project: `model_role`/`model_name` (who wrote a turn), `is_format_error`, and `tool_call_id`
    (the OpenAI chat key). Models send only the chat keys (models.base.provider_messages)."""
    messages = []
    for item in history:
        message = {k: v for k, v in item.items() if v is not None}
        message.setdefault("agent", "main")
        message.setdefault("message_type", _DEFAULT_TYPE.get(message.get("role"), "observation"))
        if message.get("role") == "assistant":
            message.setdefault("thought", "")
            message.setdefault("action", "")
            message.setdefault("tool_calls", None)
        if message.get("role") == "tool" and message.get("tool_call_ids"):
            message["tool_call_id"] = message["tool_call_ids"][0]
        messages.append(message)
    return messages


_DEFAULT_TYPE = {"system": "system_prompt", "assistant": "action", "user": "observation", "tool": "observation"}
