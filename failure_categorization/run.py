"""One categorization run: pick trajectories, apply pre-rules, ask the judge, record every verdict.

Judge answers are cached as `cache/<key>.json` under the output folder, the key hashing the
trajectory file's bytes, the judge config (model, sampling, taxonomy, input sizes, prompt
version, mode) and the instance row, so a second run over the same inputs asks nothing. Pre-rule
verdicts are recomputed (free); nothing that was not judged is cached.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from failure_categorization.exit_status import is_submitted
from failure_categorization.inputs import Report, RunSpec, repo_of
from failure_categorization.judge import (
    JudgeCallError,
    JudgeConfig,
    JudgeFatalError,
    ask,
    failure_schema,
    parse_failure,
    parse_paper,
    parse_rubric,
    rubric_schema,
)
from failure_categorization.judge_input import PROMPT_VERSION, InputConfig, build_messages, build_messages_paper
from failure_categorization.prerules import apply_prerules
from failure_categorization.taxonomy import Taxonomy
from sweagent_oec.data.trajectory import (
    TrajectoryFormatError,
    find_trajectories,
    instance_id_of,
    load_trajectory,
)
from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text
from sweagent_oec.tasks.instances import Instance

Mode = Literal["unresolved", "submitted"]
Protocol = Literal["default", "paper"]


class Record(BaseModel):
    """One line of results.jsonl."""

    instance_id: str
    repo: str
    category: str | None = None  # None in rubric mode and when not judged
    rationale: str = ""
    confidence: float | None = None
    source: Literal["prerule", "judge", "not_judged"]
    trajectory: str
    exit_status: str | None = None
    #: The evaluation outcome from the report: resolved | unresolved | error | None (not in it).
    evaluation: str | None = None
    tokens: int = 0
    cost: float = 0.0
    scores: dict[str, int | None] | None = None
    prerule: str | None = None
    #: ok | unknown_category | unparseable | empty (judge answers only)
    judge_status: str | None = None
    raw_category: str | None = None
    not_judged_reason: str | None = None
    cached: bool = False


@dataclass
class Settings:
    taxonomy: Taxonomy
    input: InputConfig = field(default_factory=InputConfig)
    judge: JudgeConfig | None = None  # None: pre-rules only
    mode: Mode = "unresolved"
    select_all: bool = False
    use_prerules: bool = True
    workers: int = 4
    cost_limit: float | None = None
    instances: dict[str, Instance] = field(default_factory=dict)
    #: default: pre-rules, the condensed case with patches, a JSON answer; paper: the OEC paper's judge
    protocol: Protocol = "default"

    def config_hash(self) -> str:
        tax = self.taxonomy.model_dump(include={"categories", "rubric"})
        ident = {
            "judge": self.judge.identity() if self.judge else None,
            "taxonomy": tax,
            "input": self.input.model_dump(),
            "prompt_version": PROMPT_VERSION,
            "mode": self.mode,
            "protocol": self.protocol,
        }
        return _sha(json.dumps(ident, sort_keys=True))


@dataclass
class Selection:
    #: one entry per trajectory: its path relative to the run's folder -> the file. Several
    #: trajectories of one instance (branches `<id>__b<n>`, repeats in sub-folders) are all kept.
    paths: dict[str, Path]
    missing: list[str]  # selected by the report, but no trajectory file


@dataclass
class Budget:
    """Judge spending shared by the workers; once the limit is reached no new call starts."""

    limit: float | None
    spent: float = 0.0
    unpriced: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def exhausted(self) -> bool:
        with self.lock:
            return self.limit is not None and self.spent >= self.limit

    def add(self, cost: float, priced: bool) -> None:
        with self.lock:
            self.spent += cost
            self.unpriced |= not priced


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def outcome(report: Report, path: Path) -> str | None:
    """A trajectory's evaluation: under its own name (a branch `<id>__b<n>` evaluated on its own),
    else under its instance's id."""
    return report.outcome(path.stem) or report.outcome(instance_id_of(path))


def select(spec: RunSpec, report: Report | None, settings: Settings) -> Selection:
    found = {path.relative_to(spec.traj_dir).as_posix(): path for path in find_trajectories(spec.traj_dir)}
    if settings.mode == "submitted" or settings.select_all:
        # Submitted runs are chosen by their exit status when each is judged; see `categorize_one`.
        return Selection(found, [])
    if report is None:
        raise UserError(f"run {spec.label}: which runs failed? pass the evaluation report (--report or LABEL=DIR:REPORT), or --all")
    wanted = report.unresolved | report.error
    chosen = {key: path for key, path in found.items() if outcome(report, path) in ("unresolved", "error")}
    have = {path.stem for path in chosen.values()} | {instance_id_of(path) for path in chosen.values()}
    return Selection(chosen, sorted(i for i in wanted if i not in have))


class Categorizer:
    def __init__(self, settings: Settings, cache_dir: Path):
        self.s = settings
        self.cache_dir = cache_dir
        self.config_hash = settings.config_hash()
        self.budget = Budget(settings.cost_limit)
        self.stop = threading.Event()  # set on a fatal judge error: no new calls
        self.schema = rubric_schema(settings.taxonomy) if settings.mode == "submitted" else failure_schema(settings.taxonomy)
        if settings.protocol == "paper" and (settings.mode != "unresolved" or (settings.judge and settings.judge.response_format != "none")):
            raise UserError("the paper protocol categorizes failures with a free-text answer: no --submitted, --response-format none")

    def _cache_path(self, traj_bytes: bytes, instance: Instance | None) -> Path:
        key = _sha(json.dumps([_sha(traj_bytes), self.config_hash, instance.model_dump_json() if instance else ""]))
        return self.cache_dir / f"{key[:32]}.json"

    def categorize_one(self, path: Path, report: Report | None) -> Record | None:
        instance_id = instance_id_of(path)
        instance = self.s.instances.get(instance_id)
        base = dict(instance_id=instance_id, repo=repo_of(instance_id, instance), trajectory=str(path),
                    evaluation=outcome(report, path) if report else None)
        try:
            raw = path.read_bytes()
            traj = load_trajectory(path)
        except (OSError, TrajectoryFormatError) as e:
            return Record(**base, source="not_judged", not_judged_reason=f"unreadable trajectory: {e}")
        base["exit_status"] = traj.info.exit_status
        if self.s.mode == "submitted" and not is_submitted(traj.info.exit_status):
            return None  # the rubric is for runs that submitted a patch
        if self.s.mode == "unresolved" and self.s.use_prerules and self.s.protocol == "default":
            hit = apply_prerules(traj, self.s.taxonomy.prerules)
            if hit:
                return Record(**base, source="prerule", category=hit.category, rationale=hit.rationale, confidence=1.0, prerule=hit.rule)
        if self.s.judge is None:
            return Record(**base, source="not_judged", not_judged_reason="pre-rules only: no judge was asked")
        cache = self._cache_path(raw, instance)
        if cache.is_file():
            return Record(**base, **json.loads(cache.read_text()), source="judge", cached=True)
        if self.stop.is_set():
            return Record(**base, source="not_judged", not_judged_reason="run stopped by a judge error")
        if self.budget.exhausted():
            return Record(**base, source="not_judged", not_judged_reason=f"cost limit ${self.budget.limit:g} reached")
        if self.s.protocol == "paper":
            messages = build_messages_paper(traj, instance, self.s.taxonomy, self.s.input.tools)
        else:
            messages = build_messages(traj, instance, self.s.taxonomy, self.s.mode, self.s.input)
        try:
            reply = ask(messages, self.s.judge, self.schema)
        except JudgeFatalError:
            self.stop.set()
            raise
        except JudgeCallError as e:
            return Record(**base, source="not_judged", not_judged_reason=f"judge failed: {e}")
        self.budget.add(reply.cost, reply.priced)
        if self.s.protocol == "paper":
            v = parse_paper(reply.content, self.s.taxonomy.names)
        elif self.s.mode == "submitted":
            v = parse_rubric(reply.content, self.s.taxonomy)
        else:
            v = parse_failure(reply.content, self.s.taxonomy.names)
        answer = dict(category=v.category, rationale=v.rationale, confidence=v.confidence,
                      scores=v.scores or None, judge_status=v.status, raw_category=v.raw_category,
                      tokens=reply.prompt_tokens + reply.completion_tokens, cost=reply.cost)
        atomic_write_text(cache, json.dumps(answer, indent=1))
        return Record(**base, **answer, source="judge")

    def run(self, spec: RunSpec, report: Report | None, selection: Selection, progress=None) -> list[Record]:
        records: list[Record] = []
        task = progress.add_task(spec.label, total=len(selection.paths)) if progress else None
        fatal: JudgeFatalError | None = None
        with ThreadPoolExecutor(max_workers=max(1, self.s.workers)) as pool:
            futures = [pool.submit(self.categorize_one, p, report) for _, p in sorted(selection.paths.items())]
            for future in as_completed(futures):
                try:
                    record = future.result()
                except JudgeFatalError as e:
                    fatal = fatal or e
                    record = None
                if record is not None:
                    records.append(record)
                if progress:
                    progress.advance(task)
        if fatal:
            raise UserError(f"{fatal}; check the judge model name and its API key (answers so far are cached)")
        return sorted(records, key=lambda r: (r.instance_id, r.trajectory))
