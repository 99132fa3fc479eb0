"""Live progress of running instances: the run loop notes each step here, displays read it.

The bottom layer (imports nothing of the project): `run` prints every step through a listener,
run-batch's display shows a row per running instance. Notes are for people, not files: nothing
here is written anywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_running: dict[str, dict] = {}
_listeners: list[Callable[[dict], None]] = []


def step(instance_id: str, *, role: str | None, model: str, index: int, action: str, observation: str, cost: float) -> None:
    """A step was taken."""
    note = {"instance_id": instance_id, "role": role or "agent", "model": model, "step": index, "action": action,
            "observation": observation, "cost": cost}
    with _lock:
        _running[instance_id] = note
        listeners = list(_listeners)
    for listener in listeners:
        listener(note)


def finish(instance_id: str) -> None:
    with _lock:
        _running.pop(instance_id, None)


def running() -> dict[str, dict]:
    """The last step of every instance still running, by id."""
    with _lock:
        return dict(_running)


@contextmanager
def listening(listener: Callable[[dict], None]) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
