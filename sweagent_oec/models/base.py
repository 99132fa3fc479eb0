"""What every model gives the run loop: `query(messages, tools) -> ModelReply`, with usage stats."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from sweagent_oec.data.trajectory import ModelStats


#: Keys of a chat message as providers take it.
MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


def provider_messages(messages: list[dict]) -> list[dict]:
    """Only the keys a chat API accepts (saved queries carry bookkeeping such as `model_role`)."""
    return [{k: m[k] for k in MESSAGE_KEYS if m.get(k) is not None} for m in messages]


@dataclass
class ModelReply:
    content: str
    tool_calls: list[dict] | None = None
    #: Provider-specific extras worth keeping (e.g. reasoning), stored in the step's extra_info.
    extra: dict = field(default_factory=dict)


class Model(Protocol):
    #: The model's name as written into trajectories (`model_name` fields).
    name: str
    stats: ModelStats

    def query(self, messages: list[dict], tools: list[dict] | None = None) -> ModelReply: ...


class BatchBudget:
    """Cost shared by every instance of a batch, for `total_cost_limit` (thread-safe). On a cluster
    the batch's one accountant keeps the count: `share_with(add)` sends every cost there and returns
    the whole batch's total, so the limit holds across nodes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cost = 0.0
        self._shared: Callable[[float], float] | None = None

    def share_with(self, add: Callable[[float], float] | None) -> None:
        self._shared = add

    def add(self, cost: float) -> float:
        with self._lock:
            self.cost += cost
            if self._shared is not None and cost:
                self.cost = max(self.cost, self._shared(cost))
            return self.cost


#: One budget per process; run-batch's workers are threads of one process.
BATCH_BUDGET = BatchBudget()
