"""Read a folder of trajectories into per-instance rollouts, each a list of texts to embed.

A set is one folder of `.traj` files (ours or SWE-agent's). The instance of a file is its stem less
a branch suffix (`<id>.traj`, `<id>__b<n>.traj`); a folder may hold several rollouts of one
instance (branches, or one sub-folder per seed), and every one of them is kept, up to
`max_rollouts` per instance (a reproducible pick by `seed` when there are more; the rest are
counted as set aside).

Two units of text:
- a **turn** (the default protocol): one executed step, as its action, observation or both,
  numbered from 1;
- a **message** (the paper's protocol): every message of the conversation (system prompt, task,
  each model reply with its tool calls, each observation), numbered from 0.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sweagent_oec.data.trajectory import (
    Step,
    Trajectory,
    TrajectoryFormatError,
    find_trajectories,
    instance_id_of,
    load_trajectory,
)
from sweagent_oec.errors import UserError

TextKind = Literal["action", "observation", "both", "message"]
TEXT_KINDS = ("action", "observation", "both")


@dataclass
class Rollout:
    path: Path
    #: unit index (turn from 1, or message from 0) -> text; a dropped first turn is absent
    texts: dict[int, str]
    #: units in the rollout before any was dropped (turns, or messages)
    length: int


@dataclass
class TrajectorySet:
    label: str
    folder: Path
    #: instance id -> its rollouts, sorted by path
    rollouts: dict[str, list[Rollout]] = field(default_factory=dict)
    #: why rollouts were left out -> how many (e.g. beyond max_rollouts, no steps)
    set_aside: dict[str, int] = field(default_factory=dict)

    def lengths(self) -> list[int]:
        return [r.length for rs in self.rollouts.values() for r in rs]

    @property
    def n_rollouts(self) -> int:
        return sum(len(rs) for rs in self.rollouts.values())

    def several(self) -> int:
        """Instances with more than one rollout."""
        return sum(len(rs) > 1 for rs in self.rollouts.values())


def parse_set_spec(spec: str) -> tuple[str, Path]:
    """`LABEL=FOLDER` -> (label, folder)."""
    label, sep, folder = spec.partition("=")
    if not sep or not label.strip() or not folder.strip():
        raise UserError(f"--set {spec!r}: expected LABEL=FOLDER, e.g. --set expert=runs/claude")
    return label.strip(), Path(folder.strip())


def steps_of(traj: Trajectory) -> list[Step]:
    """The executed steps; a SWE-agent file with only `history` is read back from its messages
    (an assistant action followed by its observation is one step)."""
    if traj.trajectory:
        return list(traj.trajectory)
    steps: list[Step] = []
    for item in traj.history:
        content = item.content if isinstance(item.content, str) else _text_of(item.content)
        if item.role == "assistant":
            steps.append(Step(action=item.action if item.action is not None else content, thought=item.thought or ""))
        elif steps and item.message_type == "observation" and not steps[-1].observation:
            steps[-1].observation = content
    return steps


def message_texts(traj: Trajectory) -> list[str]:
    """Every message of the conversation as text, in order: `history` (a model reply with its tool
    calls appended as `name(arguments)`); a file without history is rebuilt from its steps (the
    reply, then the observation, per step)."""
    if traj.history:
        texts = []
        for item in traj.history:
            text = _text_of(item.content)
            for call in item.tool_calls or []:
                fn = call.get("function", {}) if isinstance(call, dict) else {}
                args = fn.get("arguments", "")
                text += f"\n{fn.get('name', '')}({args if isinstance(args, str) else json.dumps(args)})"
            texts.append(text)
        return texts
    texts = []
    for step in traj.trajectory:
        texts += [step.response or f"{step.thought}\n{step.action}".strip(), step.observation]
    return texts


def _text_of(content: object) -> str:
    """Multi-part message content (OpenAI list form) -> its text parts joined."""
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def turn_text(step: Step, kind: TextKind) -> str:
    if kind == "action":
        return step.action
    if kind == "observation":
        return step.observation
    return f"{step.action}\n{step.observation}"


def _order(path: Path, instance_id: str, seed: int) -> bytes:
    # Hash (seed, instance, file) so the pick for one instance does not depend on the others present.
    return hashlib.sha256(f"{seed}:{instance_id}:{path}".encode()).digest()


def load_set(label: str, folder: Path, kind: TextKind, *, drop_first_turn: bool = False, seed: int = 0,
             max_rollouts: int | None = None) -> TrajectorySet:
    """Read every trajectory under `folder`; raise UserError if there is nothing to analyse."""
    if kind not in (*TEXT_KINDS, "message"):
        raise UserError(f"--text {kind!r}: choose one of {', '.join(TEXT_KINDS)}")
    if not folder.is_dir():
        raise UserError(f"set {label!r}: {folder} is not a folder; give LABEL=FOLDER with a folder of .traj files")
    by_instance: dict[str, list[Path]] = {}
    for path in find_trajectories(folder):
        by_instance.setdefault(instance_id_of(path), []).append(path)
    if not by_instance:
        raise UserError(f"set {label!r}: no .traj files under {folder}; point it at a run's output folder")
    result = TrajectorySet(label=label, folder=folder)
    for instance_id, paths in sorted(by_instance.items()):
        if max_rollouts is not None and len(paths) > max_rollouts:
            result.set_aside[f"beyond {max_rollouts} rollouts per instance"] = (
                result.set_aside.get(f"beyond {max_rollouts} rollouts per instance", 0) + len(paths) - max_rollouts)
            paths = sorted(paths, key=lambda p: _order(p, instance_id, seed))[:max_rollouts]
        rollouts = []
        for path in sorted(paths):
            try:
                traj = load_trajectory(path)
            except TrajectoryFormatError as e:
                raise UserError(f"set {label!r}: {e}; fix or remove that file") from e
            if kind == "message":
                texts = dict(enumerate(message_texts(traj)))
                length = len(texts)
            else:
                steps = steps_of(traj)
                texts = {i: turn_text(step, kind) for i, step in enumerate(steps, start=1)}
                length = len(steps)
                if drop_first_turn:
                    texts.pop(1, None)
            if texts:
                rollouts.append(Rollout(path, texts, length))
            else:
                result.set_aside["no steps"] = result.set_aside.get("no steps", 0) + 1
        if rollouts:
            result.rollouts[instance_id] = rollouts
    if not result.rollouts:
        raise UserError(f"set {label!r}: the trajectories under {folder} have no steps to analyse")
    return result
