"""History processors: what part of the history the model sees, and how it is sent.

The history is a list of HistoryItem-shaped dicts (role, content, message_type, bookkeeping).
Processors return a new list and never change the stored history. The loop asks through
MessageCache, which gives the same messages at a cost per step that does not grow with the run.
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


class MessageCache:
    """`to_messages(apply_processors(history, processors))` for a history that grows by appending, at a
    cost per call that does not grow with the history (the loop calls it every step).

    An item's message depends only on the item and on what the processors decide about it: elide it
    (an observation, not the task, with at least `n` later observations) or mark it for caching (one of
    the last `last_n_messages` user/tool items). Once enough items follow it, appending more cannot
    change those decisions: its message is final and kept. Each call recomputes only the items after
    the final ones, with the functions above, on the task message plus that tail (the task is the one
    item outside the tail a decision reads; the rest are ranks counted from the end, which the tail
    holds), so the list is equal, message for message, to the full recomputation's. A history that is
    not an extension of the last one (the conversation re-rendered at a switch) starts over.

    As for TrajectoryWriter: items must not be edited in place once seen (the loop appends and replaces).
    Final messages are shared between the lists of successive calls; callers must not edit them.
    """

    def __init__(self, processors: list[HistoryProcessorConfig]):
        self.processors = list(processors)
        self._seen: list[dict] = []  # the history of the last call
        self._messages: list[dict] = []  # the final messages: of its first items
        self._task: dict | None = None  # the task message, once among those items

    def __call__(self, history: list[dict]) -> list[dict]:
        done = len(self._messages)
        # Decisions are final only as long as items are appended: anything else starts over. (The
        # comparison checks identity first: C speed for the same items.)
        if len(history) < len(self._seen) or history[:len(self._seen)] != self._seen:
            self._messages, self._task, done = [], None, 0
        self._seen = list(history)
        tail = history[done:]
        if self._task is not None:
            messages = self._messages + to_messages(apply_processors([self._task, *tail], self.processors))[1:]
        else:
            messages = self._messages + to_messages(apply_processors(tail, self.processors))
        final = self._final(history)
        if final > done:
            if self._task is None:
                self._task = next((item for item in history[done:final] if item.get("role") == "user"), None)
            self._messages = messages[:final]
        return messages

    def _final(self, history: list[dict]) -> int:
        """How many leading items have messages that no appended item can change: for each processor,
        the last `n` (`last_n_messages`) items it counts may still change, the ones before may not."""
        task = next((i for i, item in enumerate(history) if item.get("role") == "user"), None)
        final = len(history)
        for p in self.processors:
            elides = p.type == "last_n_observations"
            wanted = p.n if elides else p.last_n_messages
            if wanted <= 0:
                continue  # elides every observation but the task, now and later; or marks none
            seen = 0
            for i in range(len(history) - 1, -1, -1):
                if seen == wanted:
                    break
                item = history[i]
                if item.get("role") in ("user", "tool") and (
                        not elides or (i != task and item.get("message_type") == "observation")):
                    seen += 1
                    final = min(final, i)
        return final
