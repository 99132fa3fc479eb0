"""Replays the actions of a `.traj` file or a JSONL of responses: for tests and reproducing runs.

A `.traj` is replayed by its actions (each step's command line, or the history's assistant turns
where a file has no steps), written in the replaying agent's own action style, so a trajectory
recorded with one format can be replayed under another. A JSONL line is either a raw reply
(a string, or {"content", "tool_calls"}) sent as is, or {"thought", "action"} rendered like a step.
"""

from __future__ import annotations

import json
from pathlib import Path

from sweagent_oec.data.actions import render_action
from sweagent_oec.data.trajectory import ModelStats, TrajectoryFormatError, load_trajectory
from sweagent_oec.errors import UserError
from sweagent_oec.exits import AgentExit
from sweagent_oec.models.base import ModelReply
from sweagent_oec.tools.specs import from_command_line


class ReplayExhausted(AgentExit):
    exit_status = "exit_error"


def _load_items(path: Path) -> list[dict]:
    if not path.exists():
        raise UserError(f"replay file {path} does not exist")
    if path.suffix == ".traj":
        try:
            traj = load_trajectory(path)
        except TrajectoryFormatError as e:
            raise UserError(str(e)) from None
        if traj.trajectory:
            return [{"thought": s.thought, "action": s.action} for s in traj.trajectory]
        return [
            {"thought": h.thought or "", "action": h.action}
            for h in traj.history
            if h.role == "assistant" and h.action is not None and not h.is_format_error
        ]
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"replay file {path}, line {n}: not valid JSON") from None
        items.append({"content": item} if isinstance(item, str) else item)
    return items


class ReplayModel:
    def __init__(self, replay_path: str | Path, style: str = "function_calling", name: str = "replay"):
        self.name = name
        self.style = style
        self.stats = ModelStats()
        self._items = _load_items(Path(replay_path))
        self._next = 0

    def query(self, messages: list[dict], tools: list[dict] | None = None) -> ModelReply:
        if self._next >= len(self._items):
            raise ReplayExhausted(f"the replay has no action left after {self._next} replies")
        item = self._items[self._next]
        self._next += 1
        self.stats = self.stats.add(ModelStats(api_calls=1))
        if "action" in item:
            message = render_action(self.style, item.get("thought") or "", from_command_line(item["action"]))
            return ModelReply(content=message["content"], tool_calls=message.get("tool_calls"))
        return ModelReply(content=item.get("content") or "", tool_calls=item.get("tool_calls"))
