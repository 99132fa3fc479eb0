"""k expert corrections from one student rollout (`switching_criteria: {type: branches}`).

A student prefix up to step s is the same whether the rollout is cut at s or continued. So the
student runs once, alone, until it submits, fails, or passes the last branch point; that rollout is
kept as `<out>/<id>/<id>.rollout.json` (SWE-agent's layout; not a `.traj`, so no stage mistakes it
for an instance's trajectory). Each branch point s then gets a fresh runtime in which the student's
first s replies are replayed without calling the student model, and the expert takes over at s:
one `.traj` per branch, `<out>/<id>__b<s>/<id>__b<s>.traj`, which every later stage treats as an
instance of its own (`instance_id_of` maps it back to `<id>` for its tests).

Before each replayed reply the conversation the student would now see is compared with what it saw
in the rollout at that step. A difference (a command whose output changes between runs) marks the
branch `replay_diverged` at that step, and the student model is called live from there on, so
every trajectory is what its student really would have been shown.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from pathlib import Path

from sweagent_oec.agent.actors import build_actors
from sweagent_oec.agent.loop import Agent
from sweagent_oec.config import RunConfig, SwitchingCriteria
from sweagent_oec.data.trajectory import STUDENT, Trajectory, TrajectoryFormatError, load_trajectory, trajectory_path
from sweagent_oec.env import make_runtime
from sweagent_oec.exits import AgentExit
from sweagent_oec.files import atomic_write_text
from sweagent_oec.models.base import Model, ModelReply
from sweagent_oec.models.switching import SwitchSchedule, draw_branch_steps
from sweagent_oec.tasks.instances import Instance

log = logging.getLogger(__name__)


def is_branching(config: RunConfig) -> bool:
    model = config.agent.model
    return model.name == "switching" and model.switching_criteria is not None and model.switching_criteria.type == "branches"


def branch_id(instance_id: str, step: int) -> str:
    return f"{instance_id}__b{step}"


def rollout_path(output_dir: Path | str, instance_id: str) -> Path:
    return Path(output_dir) / instance_id / f"{instance_id}.rollout.json"


class BranchPointsPassed(AgentExit):
    """The rollout has reached the last branch point: the student is not needed further."""

    exit_status = "exit_branch_points"


def _steps_taken(messages: list[dict]) -> int:
    """Steps so far, read off a query: one accepted assistant reply per step (re-query attempts are marked)."""
    return sum(1 for m in messages if m.get("role") == "assistant" and not m.get("is_format_error"))


def _seen(messages: list[dict]) -> list[tuple[str, str]]:
    """What a model is shown, for comparison: role and text, bookkeeping keys and re-query attempts left out."""
    out = []
    for m in messages:
        if m.get("is_format_error"):
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(str(b.get("text", "")) if isinstance(b, dict) else str(b) for b in content)
        out.append((str(m.get("role")), "" if content is None else str(content)))
    return out


class StepLimitedModel:
    """The rollout's student: answers until `limit` steps are taken, then ends the run."""

    def __init__(self, model: Model, limit: int):
        self.model, self.limit, self.name = model, limit, model.name

    @property
    def stats(self):  # the wrapped model replaces its stats object on every call
        return self.model.stats

    def query(self, messages: list[dict], tools: list[dict] | None = None) -> ModelReply:
        if _steps_taken(messages) >= self.limit:
            raise BranchPointsPassed(f"the student passed the last branch point (step {self.limit})")
        return self.model.query(messages, tools)


class PrefixModel:
    """A branch's student: the rollout's replies while the conversation matches it, live after."""

    def __init__(self, live: Model, rollout: Trajectory, source: Path):
        self.live, self.source, self.name = live, source, live.name
        self.steps = rollout.trajectory
        self.replies = [h for h in rollout.history if h.role == "assistant"]
        self.diverged_at: int | None = None
        self.replayed = 0

    @property
    def stats(self):  # only the live calls cost anything
        return self.live.stats

    def query(self, messages: list[dict], tools: list[dict] | None = None) -> ModelReply:
        i = _steps_taken(messages)
        if self.diverged_at is None and i < len(self.steps) and _seen(messages) == _seen(self.steps[i].query):
            self.replayed += 1
            reply = self.replies[i]
            extra = {"replayed_from": str(self.source)}
            if self.steps[i].extra_info.get("format_errors"):
                extra["format_errors"] = self.steps[i].extra_info["format_errors"]
            return ModelReply(content=reply.content if isinstance(reply.content, str) else "", tool_calls=reply.tool_calls,
                              extra=extra)
        if self.diverged_at is None:
            self.diverged_at = i
            log.info("branch replay of %s diverged at step %d: the student answers live from here", self.source, i)
        return self.live.query(messages, tools)


class BranchSchedule(SwitchSchedule):
    """Switch at the branch point; the record names the branching criterion and the source rollout."""

    def __init__(self, criteria: SwitchingCriteria, step: int, seed: int, instance_id: str, prefix: PrefixModel | None,
                 steps: list[int]):
        super().__init__(SwitchingCriteria(type="step_count", threshold=step), seed, instance_id, count_format_errors=False)
        self.branching, self.step, self.prefix, self.all_steps = criteria, step, prefix, steps

    def record(self) -> dict:
        record = super().record()
        diverged = self.prefix.diverged_at if self.prefix else None
        record.update(criterion=self.branching.describe(), branch={
            "source_rollout": str(self.prefix.source) if self.prefix else None, "branch_step": self.step,
            "branch_steps": self.all_steps, "replayed_steps": self.prefix.replayed if self.prefix else 0,
            "replay_diverged": diverged is not None, "diverged_at": diverged})
        return record


def _actors(config: RunConfig, instance: Instance):
    """The student and expert as the config builds them (the branch schedule is ours, not theirs)."""
    model = config.agent.model.model_copy(update={"switching_criteria": SwitchingCriteria(type="step_count", threshold=0)})
    actors, _ = build_actors(config.agent.model_copy(update={"model": model}), instance)
    return actors


def _finished(path: Path) -> Trajectory | None:
    try:
        traj = load_trajectory(path)
    except TrajectoryFormatError:
        return None
    return traj if traj.finished else None


def expected_branches(output_dir: Path | str, instance_id: str) -> list[str] | None:
    """The branch ids a finished rollout made room for, or None while the rollout is not done."""
    traj = _finished(rollout_path(output_dir, instance_id))
    if traj is None:
        return None
    return [branch_id(instance_id, s) for s in (traj.model_extra or {}).get("branching", {}).get("branches", [])]


def _rollout(config: RunConfig, instance: Instance, output_dir: Path, steps: list[int],
             stop: threading.Event | None, redo: bool) -> tuple[Path, Trajectory]:
    path = rollout_path(output_dir, instance.instance_id)
    done = None if redo else _finished(path)
    if done is None:
        actors = _actors(config, instance)
        student = replace(actors[0], model=StepLimitedModel(actors[0].model, max(steps)))
        runtime = make_runtime(instance, config.env)
        try:
            Agent(instance, runtime, [student], None, path, replay_config=config.raw, stop=stop).run()
        finally:
            runtime.close()
        done = load_trajectory(path)
    taken = sum(1 for s in done.trajectory if s.model_role == STUDENT)
    # A branch point the student never reached (it submitted or failed first) has no branch.
    # A rollout that stopped at the last branch point reached every one of them.
    reached = taken if done.info.exit_status not in ("exit_branch_points", "submitted (exit_branch_points)") else max(steps)
    branches = [s for s in steps if s <= reached]
    data = json.loads(path.read_text())
    data["branching"] = {"branch_steps": steps, "branches": branches, "student_steps": taken,
                         "skipped": [s for s in steps if s not in branches]}
    atomic_write_text(path, json.dumps(data, indent=1))
    return path, load_trajectory(path)


def run_branches(config: RunConfig, instance: Instance, output_dir: Path | str,
                 stop: threading.Event | None = None, redo: bool = False) -> list[tuple[str, Path, dict]]:
    """The rollout (once), then each branch not yet finished: [(branch id, .traj path, info)].
    With `redo`, the rollout and every branch run again."""
    output_dir = Path(output_dir)
    model = config.agent.model
    criteria = model.switching_criteria
    steps = draw_branch_steps(criteria, model.seed, instance.instance_id)
    source, rollout = _rollout(config, instance, output_dir, steps, stop, redo)
    results = []
    for step in (rollout.model_extra or {})["branching"]["branches"]:
        bid = branch_id(instance.instance_id, step)
        path = trajectory_path(output_dir, bid)
        done = None if redo else _finished(path)
        if done is not None:
            results.append((bid, path, done.info.model_dump()))
            continue
        actors = _actors(config, instance)
        prefix = PrefixModel(actors[0].model, rollout, source) if step > 0 else None
        if prefix is not None:
            actors[0] = replace(actors[0], model=prefix)
        schedule = BranchSchedule(criteria, step, model.seed, bid, prefix, steps)
        runtime = make_runtime(instance, config.env)
        try:
            info = Agent(instance, runtime, actors, schedule, path, replay_config=config.raw, stop=stop).run()
        finally:
            runtime.close()
        results.append((bid, path, info))
    return results
