"""The `.traj` format: SWE-agent 1.x layout plus the OEC role fields. The one place it is defined.

Layout (DESIGN section 4): top level `trajectory` (steps), `history` (messages), `info`,
`replay_config`, `environment`. OEC adds `model_role` ("student" | "expert") and `model_name` on
every step and every assistant history item, and `info.oec` (switch step, schedule, seed,
per-role model stats).

Reading is tolerant of what SWE-agent really writes: some of its files store `tool_calls`,
`model_stats`, `state` or `execution_time` as Python-repr strings; those are parsed back.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sweagent_oec.data.trajectory_base import EXPERT, STUDENT, TrajectoryFormatError, _literal  # noqa: F401 (re-exported)
from sweagent_oec.files import atomic_write_text

ModelRole = Literal["student", "expert"]

#: Exit statuses as in SWE-agent; an autosubmitted run reads "submitted (exit_cost)" etc.
EXIT_STATUSES = (
    "submitted",
    "exit_cost",
    "exit_context",
    "exit_format",
    "exit_command_timeout",
    "exit_api",
    "exit_environment_error",
    "exit_error",
)


class ModelStats(BaseModel):
    model_config = ConfigDict(extra="allow")

    instance_cost: float = 0.0
    tokens_sent: int = 0
    tokens_received: int = 0
    api_calls: int = 0
    #: Of tokens_sent: input read from / written to the provider's prompt cache (Anthropic, OpenAI).
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def add(self, other: "ModelStats") -> "ModelStats":
        return ModelStats(
            instance_cost=self.instance_cost + other.instance_cost,
            tokens_sent=self.tokens_sent + other.tokens_sent,
            tokens_received=self.tokens_received + other.tokens_received,
            api_calls=self.api_calls + other.api_calls,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


class HistoryItem(BaseModel):
    """One message of the conversation, in OpenAI chat shape plus SWE-agent's bookkeeping."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: Any = ""
    agent: str = "main"
    message_type: str = ""  # system_prompt | observation | action | thought | demonstration
    thought: str | None = None
    action: str | None = None
    tool_calls: list[dict] | None = None
    tool_call_ids: list[str] | None = None
    is_format_error: bool | None = None
    model_role: ModelRole | None = None
    model_name: str | None = None

    _parse_literals = field_validator("tool_calls", "tool_call_ids", mode="before")(
        classmethod(lambda cls, v: _literal(v))
    )


class Step(BaseModel):
    """One executed action: what the model said, what ran, what came back."""

    model_config = ConfigDict(extra="allow")

    action: str = ""
    observation: str = ""
    response: str = ""
    thought: str = ""
    execution_time: float = 0.0
    state: dict = Field(default_factory=dict)
    #: What the model was sent, as SWE-agent history items (HistoryItem's keys: `role`, `content`, `agent`,
    #: `message_type`; `thought`, `action`, `tool_calls` on assistant items; `tool_call_ids` on tool
    #: results) plus `tool_call_id`; the failed reply and error of a re-query carry `is_format_error`.
    #: SWE-smith's transform_to_ft reads the last step's query as the whole conversation.
    query: list[dict] = Field(default_factory=list)
    #: `tool_call` (the parsed action) and `format_errors` (failed replies: kind format | blocked |
    #: bash_syntax, the reply, the error shown) among others.
    extra_info: dict = Field(default_factory=dict)
    model_role: ModelRole | None = None
    model_name: str | None = None

    @field_validator("state", mode="before")
    @classmethod
    def _state(cls, v: Any) -> Any:
        v = _literal(v)
        return v if isinstance(v, dict) else {}

    @field_validator("execution_time", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        return 0.0 if v in (None, "") else v


class OECInfo(BaseModel):
    """Where the expert took over and how that was decided."""

    model_config = ConfigDict(extra="allow")

    #: Index of the first trajectory step taken by the expert (= number of student steps);
    #: None while (or if) the expert never took over.
    switch_step: int | None = None
    switched: bool = False
    #: Schedule that decided the switch, e.g. {"type": "random_step_range", "start_step": 0, "end_step": 30}.
    criterion: dict = Field(default_factory=dict)
    #: The value the schedule drew for this instance (model queries for step criteria).
    drawn_threshold: float | None = None
    seed: int | None = None
    student_model: str | None = None
    expert_model: str | None = None
    model_stats: dict[str, ModelStats] = Field(default_factory=dict)


class TrajectoryInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    submission: str | None = None
    exit_status: str | None = None
    model_stats: ModelStats = Field(default_factory=ModelStats)
    oec: OECInfo | None = None

    @field_validator("model_stats", mode="before")
    @classmethod
    def _stats(cls, v: Any) -> Any:
        v = _literal(v)
        return v if isinstance(v, dict) else {}


class Trajectory(BaseModel):
    model_config = ConfigDict(extra="allow")

    trajectory: list[Step] = Field(default_factory=list)
    history: list[HistoryItem] = Field(default_factory=list)
    info: TrajectoryInfo = Field(default_factory=TrajectoryInfo)
    replay_config: Any = None
    environment: Any = None

    @property
    def finished(self) -> bool:
        """A run that reached an exit status (submitted or not); unfinished ones are redone."""
        return bool(self.info.exit_status)

    def roles(self) -> list[str | None]:
        return [step.model_role for step in self.trajectory]


def trajectory_path(output_dir: Path | str, instance_id: str) -> Path:
    """`<out>/<instance_id>/<instance_id>.traj`, as SWE-agent lays it out."""
    return Path(output_dir) / instance_id / f"{instance_id}.traj"


#: A branch trajectory of an instance (several rollouts from one start) is `<instance_id>__b<n>.traj`.
BRANCH_SUFFIX = re.compile(r"__b\d+$")


def instance_id_of(path: Path | str) -> str:
    """The instance a `.traj` file belongs to: its stem, less a branch suffix `__b<n>`. Repeats of
    one instance (e.g. one sub-folder per seed) share the stem."""
    return BRANCH_SUFFIX.sub("", Path(path).stem)


def load_trajectory(path: Path | str) -> Trajectory:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise TrajectoryFormatError(f"{path}: cannot read trajectory: {e}") from e
    except json.JSONDecodeError as e:
        raise TrajectoryFormatError(f"{path}: not valid JSON (line {e.lineno}): corrupt or truncated .traj") from e
    if not isinstance(data, dict) or not ({"trajectory", "history"} & set(data)):
        raise TrajectoryFormatError(f"{path}: not a trajectory (needs a 'trajectory' or 'history' key)")
    try:
        return Trajectory.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise TrajectoryFormatError(f"{path}: bad trajectory field {where}: {first['msg']}") from e


def find_trajectories(folder: Path | str) -> list[Path]:
    """All `.traj` files under a folder, sorted (the layout is one folder per instance)."""
    return sorted(Path(folder).rglob("*.traj"))


def trajectory_to_dict(trajectory: Trajectory) -> dict:
    """Plain dict for writing: unset optional fields are left out (as SWE-agent writes them),
    except in `info.oec`, where a null `switch_step` says the switch has not happened."""
    data = trajectory.model_dump(exclude_none=True)
    if trajectory.info.oec is not None:
        data["info"]["oec"] = trajectory.info.oec.model_dump()
    return data


def save_trajectory(path: Path | str, trajectory: Trajectory) -> None:
    atomic_write_text(path, json.dumps(trajectory_to_dict(trajectory), indent=1))


class TrajectoryWriter:
    """Persists a growing trajectory at a per-step cost that does not grow with the run.

    During the run each `save` appends one line to the step log, `<traj>.steps.jsonl`: the new
    steps, each `query` as its change against the previous step's query (a few messages: the new
    turn, an observation a history processor elided), the change to `history`, and `info`; the
    first line holds `replay_config` and `environment`. Nothing already written is rewritten, so a
    step at turn 300 costs what one at turn 10 does.

    The `.traj` (SWE-agent's layout, every step with its full `query`, what SWE-agent's tools and
    SWE-smith's converter read) is written once, atomically, when the run ends (`info` has an
    `exit_status`), and the log is then removed. So the `.traj` is NOT readable during a run;
    the log is. A run killed mid-way leaves its log: `recover_trajectory` (called on resume)
    assembles an unfinished `.traj` from its complete lines (a line torn by the kill is dropped:
    the steps before it are kept), which resume then redoes as it always has.

    Items of `steps`/`history` must not be edited in place once saved (the loop appends and
    replaces, never edits): changes are found by identity, then equality.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.log_path = step_log_path(self.path)
        self._log = None
        self._steps = 0
        self._query: list = []
        self._history: list = []
        self._header: tuple = ()

    def save(self, steps: list[dict], history: list[dict], info: dict, replay_config: Any, environment: Any) -> None:
        if info.get("exit_status"):
            self.finish(steps, history, info, replay_config, environment)
            return
        if self._log is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "w")
            self.path.unlink(missing_ok=True)  # an earlier run's .traj: this run redoes it
        entry: dict = {}
        if not self._header or self._header[0] != replay_config or self._header[1] != environment:
            entry.update(replay_config=replay_config, environment=environment)
            self._header = (copy.deepcopy(replay_config), copy.deepcopy(environment))  # both small, rarely written
        new_steps = []
        for step in steps[self._steps:]:
            query = step.get("query") or []
            new_steps.append({**step, "query": _delta(self._query, query)})
            self._query = list(query)
        self._steps = len(steps)
        entry.update(steps=new_steps, history=_delta(self._history, history), info=info)
        self._history = list(history)
        self._log.write(json.dumps(entry) + "\n")
        self._log.flush()  # in the kernel's hands: a killed process loses nothing written

    def finish(self, steps: list[dict], history: list[dict], info: dict, replay_config: Any, environment: Any) -> None:
        """The whole `.traj`, atomically; then the step log goes."""
        atomic_write_text(self.path, _traj_text(steps, history, info, replay_config, environment))
        self.close()
        self.log_path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def step_log_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".steps.jsonl")


def _traj_text(steps: list[dict], history: list[dict], info: dict, replay_config: Any, environment: Any) -> str:
    return ('{"trajectory": [' + ",\n".join(json.dumps(step) for step in steps) + "],\n"
            '"history": ' + json.dumps(history) + ",\n"
            '"info": ' + json.dumps(info) + ",\n"
            '"replay_config": ' + json.dumps(replay_config) + ",\n"
            '"environment": ' + json.dumps(environment) + "}\n")


def _delta(old: list, new: list, chunk: int = 64) -> dict:
    """`new` as a change of `old`: keep the first `keep` items, replace some, append the rest.
    Compared a chunk at a time (one C-level list comparison each), item by item only inside a
    chunk that differs, so the cost stays near-constant as the conversation grows."""
    keep = min(len(old), len(new))
    changed = []
    for start in range(0, keep, chunk):
        end = min(start + chunk, keep)
        if old[start:end] != new[start:end]:
            changed += [[i, new[i]] for i in range(start, end) if old[i] is not new[i] and old[i] != new[i]]
    return {"keep": keep, "set": changed, "add": new[keep:]}


def _apply(old: list, delta: dict) -> list:
    new = old[:delta["keep"]]
    for i, item in delta["set"]:
        new[i] = item
    return new + delta["add"]


def read_step_log(path: Path | str) -> dict | None:
    """The trajectory a step log holds (its complete lines), or None if it has none."""
    data: dict = {"trajectory": [], "history": [], "info": {}, "replay_config": None, "environment": None}
    query: list = []
    lines = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # torn by a kill mid-write
            try:
                entry = json.loads(line)
                for step in entry.get("steps", []):
                    query = _apply(query, step["query"])
                    data["trajectory"].append({**step, "query": query})
                data["history"] = _apply(data["history"], entry["history"])
            except (ValueError, KeyError, TypeError, IndexError):
                break
            data["info"] = entry.get("info", data["info"])
            for key in ("replay_config", "environment"):
                if key in entry:
                    data[key] = entry[key]
            lines += 1
    return data if lines else None


def recover_trajectory(path: Path | str) -> bool:
    """Resume's first look at a trajectory: a run killed mid-way left a step log and no `.traj`;
    assemble the `.traj` from the log (unfinished: no exit status, `info.interrupted` says so) and
    remove the log. A log beside a `.traj` is stale (the run finished after it): removed.
    Returns whether a `.traj` was assembled."""
    path = Path(path)
    log = step_log_path(path)
    if not log.exists():
        return False
    if path.exists():
        log.unlink(missing_ok=True)
        return False
    data = read_step_log(log)
    if data is not None:
        data["info"] = {**data["info"], "exit_status": None,
                        "interrupted": f"the run stopped after step {len(data['trajectory'])}; assembled from its step log"}
        atomic_write_text(path, _traj_text(data["trajectory"], data["history"], data["info"], data["replay_config"],
                                           data["environment"]))
    log.unlink(missing_ok=True)
    return data is not None
