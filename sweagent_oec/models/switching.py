"""When the expert takes over: the switching schedule of a `name: switching` model.

Schedules: `step_count` (after `threshold` student queries), `random_step_range` (a uniform integer
in [start_step, end_step], inclusive, drawn once per instance), `token_count` and `cost` (once the
student has used that much). Triggers on what the student does: `loop` (the SFT filter's repetition
rules, applied live after every student step), `format_errors` (`threshold` malformed replies in a
row), `judge` (every `every` student steps a judge model reads the run so far and answers
intervene/continue). `any_of` combines them: the first to fire wins, and `info.oec.trigger` says
which fired and why. Draws come from the config's seed and the instance id only, so they are the
same across runs, processes and worker counts. A threshold of 0 means the expert answers from the
first step; a student that submits first leaves a student-only trajectory.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field
from typing import Callable

from sweagent_oec.config import SwitchingCriteria
from sweagent_oec.data.filters import RepetitionRules, find_loops
from sweagent_oec.data.trajectory import ModelStats
from sweagent_oec.models.base import Model

log = logging.getLogger(__name__)

DEFAULT_JUDGE_TEMPLATE = (
    "You supervise a student coding agent working on a software task. Read its run so far and decide "
    "whether a stronger expert should take over now: because the student is stuck, repeating itself, "
    "editing the wrong place, or heading to a wrong fix. Answer with one word on the first line, "
    "INTERVENE or CONTINUE, then one line with your reason."
)
#: The judge sees at most this much of each observation (the run so far can be long).
JUDGE_OBSERVATION_CHARS = 1000


def _rng(seed: int, instance_id: str, salt: str = "") -> random.Random:
    digest = hashlib.sha256(f"{seed}:{instance_id}{salt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def draw_switch_step(seed: int, instance_id: str, start_step: int, end_step: int) -> int:
    return _rng(seed, instance_id).randint(start_step, end_step)


def draw_branch_steps(criteria: SwitchingCriteria, seed: int, instance_id: str) -> list[int]:
    """The switch steps of a `branches` criterion, sorted: as listed, or k distinct draws."""
    if criteria.steps:
        return sorted(criteria.steps)
    pool = range(criteria.start_step, criteria.end_step + 1)
    return sorted(_rng(seed, instance_id, ":branches").sample(pool, criteria.k))


@dataclass
class StudentState:
    """What the triggers look at, as of the next query."""

    steps: int  # student steps taken
    queries: int  # student queries (re-queries included when they count as steps)
    stats: ModelStats
    actions: list[str] = field(default_factory=list)  # the student's actions, one command line each
    observations: list[str] = field(default_factory=list)
    malformed_in_a_row: int = 0
    problem_statement: str = ""


class Trigger:
    """One criterion: `check` returns why the expert should take over now, or None."""

    def __init__(self, criteria: SwitchingCriteria):
        self.criteria = criteria

    def check(self, state: StudentState) -> str | None:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def record(self) -> dict:
        return {}


class Threshold(Trigger):
    """step_count, random_step_range, token_count, cost, format_errors: a number reached."""

    def __init__(self, criteria: SwitchingCriteria, seed: int, instance_id: str, count_format_errors: bool):
        super().__init__(criteria)
        self.count_format_errors = count_format_errors
        if criteria.type == "random_step_range":
            self.threshold: float = draw_switch_step(seed, instance_id, criteria.start_step, criteria.end_step)
        else:
            self.threshold = float(criteria.threshold)

    def check(self, state: StudentState) -> str | None:
        kind = self.criteria.type
        if kind in ("step_count", "random_step_range"):
            used, unit = (state.queries if self.count_format_errors else state.steps), "student steps"
        elif kind == "token_count":
            used, unit = state.stats.tokens_sent + state.stats.tokens_received, "student tokens"
        elif kind == "cost":
            used, unit = state.stats.instance_cost, "dollars of student cost"
        else:
            used, unit = state.malformed_in_a_row, "malformed replies in a row"
        return f"{used:g} {unit} (threshold {self.threshold:g})" if used >= self.threshold else None

    def record(self) -> dict:
        return {"drawn_threshold": self.threshold}


class LoopTrigger(Trigger):
    """The student repeats itself, by the rules `convert` drops looping trajectories with."""

    def __init__(self, criteria: SwitchingCriteria):
        super().__init__(criteria)
        self.rules = RepetitionRules(criteria.max_consecutive, criteria.cycle_repeats, criteria.max_total)

    def check(self, state: StudentState) -> str | None:
        loops = find_loops(state.actions, self.rules)
        if not loops:
            return None
        loop = loops[0]
        return f"{loop.rule} repetition from student step {loop.start}: {loop.action[:200]}"


class JudgeTrigger(Trigger):
    """Every `every` student steps, a judge model reads the run so far; it may say intervene."""

    def __init__(self, criteria: SwitchingCriteria, judge: Model):
        super().__init__(criteria)
        self.judge = judge
        self.verdicts: list[dict] = []

    def check(self, state: StudentState) -> str | None:
        every = self.criteria.every
        if state.steps == 0 or state.steps % every or any(v["step"] == state.steps for v in self.verdicts):
            return None  # not a review point, or this one was already reviewed (re-queries re-check)
        reply = self.judge.query(self.messages(state), None)
        verdict, reason = parse_verdict(reply.content or "")
        self.verdicts.append({"step": state.steps, "verdict": verdict, "reason": reason})
        return f"judge at student step {state.steps}: {reason}" if verdict == "intervene" else None

    def messages(self, state: StudentState) -> list[dict]:
        lines = [f"Task:\n{state.problem_statement}\n", f"The student's {state.steps} steps so far:"]
        for i, (action, observation) in enumerate(zip(state.actions, state.observations)):
            cut = observation if len(observation) <= JUDGE_OBSERVATION_CHARS else (
                observation[:JUDGE_OBSERVATION_CHARS] + f"\n[... {len(observation) - JUDGE_OBSERVATION_CHARS} more characters]")
            lines.append(f"\nStep {i}: {action}\nOutput:\n{cut}")
        lines.append("\nShould the expert take over now? First line INTERVENE or CONTINUE, then your reason.")
        return [{"role": "system", "content": self.criteria.judge_template or DEFAULT_JUDGE_TEMPLATE},
                {"role": "user", "content": "\n".join(lines)}]

    def record(self) -> dict:
        return {"judge_verdicts": self.verdicts, "judge_model": self.judge.name,
                "judge_stats": self.judge.stats.model_dump()}


def parse_verdict(text: str) -> tuple[str, str]:
    """("intervene" | "continue", reason). The verdict is the first word that names one; a reply
    that names neither is read as continue (the student keeps going), and the reason says so."""
    words = text.replace("*", " ").replace(":", " ").split()
    for word in words[:20]:
        token = word.strip(".,!\"'`").lower()
        if token in ("intervene", "continue"):
            lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
            reason = " ".join(lines[1:])[:500] if len(lines) > 1 else lines[0][:500]
            return token, reason
    return "continue", f"no verdict in the judge's reply: {text.strip()[:200]!r}"


class AnyOf(Trigger):
    def __init__(self, criteria: SwitchingCriteria, children: list[Trigger]):
        super().__init__(criteria)
        self.children = children

    def check(self, state: StudentState) -> str | None:
        for child in self.children:
            reason = child.check(state)
            if reason is not None:
                self.fired_child = child
                return reason
        return None

    def record(self) -> dict:
        return {"criteria": [child.record() for child in self.children]}


class SwitchSchedule:
    def __init__(self, criteria: SwitchingCriteria, seed: int, instance_id: str, count_format_errors: bool = True,
                 make_judge: Callable[[SwitchingCriteria], Model] | None = None):
        self.criteria = criteria
        self.seed = seed
        self.count_format_errors = count_format_errors
        self.trigger = self._build(criteria, instance_id, make_judge)
        self.fired: dict | None = None

    def _build(self, criteria: SwitchingCriteria, instance_id: str, make_judge) -> Trigger:
        if criteria.type == "any_of":
            return AnyOf(criteria, [self._build(c, instance_id, make_judge) for c in criteria.criteria])
        if criteria.type == "loop":
            return LoopTrigger(criteria)
        if criteria.type == "judge":
            if make_judge is None:
                raise ValueError("a judge trigger needs a way to build its model")
            return JudgeTrigger(criteria, make_judge(criteria))
        if criteria.type == "branches":
            raise ValueError("branches is run by the branching runner, not as a live schedule")
        return Threshold(criteria, self.seed, instance_id, self.count_format_errors)

    @property
    def threshold(self) -> float | None:
        return self.trigger.threshold if isinstance(self.trigger, Threshold) else None

    def due(self, student_steps: int, student_queries: int, student_stats: ModelStats, **state) -> bool:
        """Whether the expert should answer the next query (checked before each query)."""
        current = StudentState(student_steps, student_queries, student_stats, **state)
        reason = self.trigger.check(current)
        if reason is None:
            return False
        fired = getattr(self.trigger, "fired_child", self.trigger).criteria.type
        self.fired = {"type": fired, "reason": reason, "student_steps": student_steps}
        return True

    def record(self) -> dict:
        """The `info.oec` fields that say how the switch was decided."""
        return {
            "criterion": self.criteria.describe(),
            "drawn_threshold": self.threshold,
            "seed": self.seed,
            "count_format_errors_as_steps": self.count_format_errors,
            "trigger": self.fired,
            **({"triggers": self.trigger.record()} if not isinstance(self.trigger, Threshold) else {}),
        }
