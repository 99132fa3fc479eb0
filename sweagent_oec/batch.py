"""run-batch: many instances, concurrent workers, shards, resume, live progress, preds.json.

Model calls are I/O, so workers are threads of one process (a core each is not needed). Every
instance ends with a `.traj`: a failure that happens before the loop runs (e.g. the environment
cannot start) is written as a trajectory with its exit status and reason. Resume skips instances
whose trajectory has an exit status and redoes the rest. `preds.json` and the exit-status summary
are rewritten atomically as each instance finishes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sweagent_oec import progress
from sweagent_oec.config import RunConfig
from sweagent_oec.data.trajectory import (
    ModelStats,
    TrajectoryFormatError,
    TrajectoryWriter,
    load_trajectory,
    recover_trajectory,
    trajectory_path,
)
from sweagent_oec.errors import UserError
from sweagent_oec.exits import Interrupted
from sweagent_oec.files import atomic_write_text
from sweagent_oec.harness.predictions import (
    Prediction,
    load_predictions,
    model_name_or_path,
    pred_path,
    write_pred,
    write_predictions,
)
from sweagent_oec.models.base import BATCH_BUDGET
from sweagent_oec.models.pricing import check_prices
from sweagent_oec.branching import expected_branches, is_branching
from sweagent_oec.runner import run_units
from sweagent_oec.secrets import scrub
from sweagent_oec.tasks.instances import Instance, check_instance_id, check_unique_ids

log = logging.getLogger(__name__)
EXIT_STATUS_FILE = "run_batch_exit_statuses.yaml"


def slurm_shard() -> str:
    """This array job's `i/N` from SLURM_ARRAY_TASK_ID/_COUNT (ids may start above 0: _MIN is subtracted)."""
    env = os.environ
    try:
        task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    except (KeyError, ValueError):
        raise UserError("--shard slurm needs SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (run it as an sbatch --array job)") from None
    return f"{task - first}/{count}"


def shard(instances: list[Instance], spec: str | None) -> list[Instance]:
    """`i/N`: the i-th of N interleaved parts (0-based), so shards get a similar mix; `slurm`: this
    array job's part (any other array scheduler: pass its index and count as `$I/$N`)."""
    if not spec:
        return instances
    if spec == "slurm":
        spec = slurm_shard()
    try:
        index, count = (int(x) for x in spec.split("/"))
        assert count > 0 and 0 <= index < count
    except (ValueError, AssertionError):
        raise UserError(f"--shard {spec!r} must be i/N with 0 <= i < N, e.g. 0/4") from None
    return instances[index::count]


def total_cost_limit(config: RunConfig) -> float:
    model = config.agent.model
    limits = [m.total_cost_limit for m in (model.models or [model]) if m.total_cost_limit]
    return min(limits) if limits else 0.0


def model_label(config: RunConfig) -> str:
    model = config.agent.model
    if model.name == "switching":
        return model_name_or_path(model.models[0].name, model.models[1].name)
    return model_name_or_path(model.name)


@dataclass
class BatchState:
    """What the progress display and the summary files show; changed under `lock` only."""

    total: int
    done: int = 0
    skipped: int = 0
    running: set[str] = field(default_factory=set)
    exit_statuses: dict[str, str] = field(default_factory=dict)
    #: Instances finished per node (Ray executor), for the display and the end-of-batch table.
    nodes: Counter = field(default_factory=Counter)
    #: Per model role (student/expert, or the model's name without switching): instance id -> stats.
    role_stats: dict[str, dict[str, ModelStats]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)

    def counts(self) -> Counter:
        return Counter(self.exit_statuses.values())

    def note_stats(self, iid: str, info: dict) -> None:
        oec = info.get("oec") or {}
        per_role = oec.get("model_stats") if isinstance(oec, dict) else None
        if not per_role and info.get("model_stats"):
            per_role = {"model": info["model_stats"]}
        judges = _judge_stats(oec.get("triggers")) if isinstance(oec, dict) else []
        if judges:
            total = ModelStats()
            for stats in judges:
                total = total.add(ModelStats.model_validate(stats))
            per_role = {**(per_role or {}), "judge": total}
        for role, stats in (per_role or {}).items():
            try:
                self.role_stats.setdefault(str(role), {})[iid] = ModelStats.model_validate(stats)
            except ValueError:
                continue  # a foreign trajectory's stats: not counted

    def cost_table(self) -> str:
        """Per role: instances, calls, tokens sent/received, cached tokens (read/write), dollars."""
        header = ("role", "instances", "calls", "tokens sent", "tokens received", "cache read", "cache write", "cost $")
        rows = []
        for role, per_instance in sorted(self.role_stats.items()):
            total = ModelStats()
            for stats in per_instance.values():
                total = total.add(stats)
            rows.append((role, str(len(per_instance)), str(total.api_calls), str(total.tokens_sent), str(total.tokens_received),
                         str(total.cache_read_tokens), str(total.cache_write_tokens), f"{total.instance_cost:.4f}"))
        if len(rows) > 1:
            cost = sum(float(r[-1]) for r in rows)
            rows.append(("all", "", "", "", "", "", "", f"{cost:.4f}"))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                         for r in [header, *rows])


def _judge_stats(node) -> list:
    """The stats of every judge in a switching trigger's record (info.oec.triggers, nested)."""
    if isinstance(node, dict):
        found = [node["judge_stats"]] if isinstance(node.get("judge_stats"), dict) else []
        return found + [s for key, value in node.items() if key != "judge_stats" for s in _judge_stats(value)]
    if isinstance(node, list):
        return [s for value in node for s in _judge_stats(value)]
    return []


class BatchRun:
    def __init__(self, config: RunConfig, instances: list[Instance], output_dir: Path, num_workers: int = 1,
                 redo_existing: bool = False, keep_errors: bool = False):
        self.config, self.instances, self.output_dir = config, instances, Path(output_dir)
        self.num_workers, self.redo_existing = max(1, num_workers), redo_existing
        #: Environment errors (a failed image pull, a Docker hiccup) are the infrastructure's, not the
        #: model's: a rerun redoes them unless asked to keep them.
        self.keep_errors = keep_errors
        blocking = next((p for p in (self.output_dir, *self.output_dir.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise UserError(f"output folder {self.output_dir} cannot be made: {blocking} is a file; give a folder with -o/--output-dir")
        for instance in instances:  # ids become paths under output_dir; two runs of one id would share a .traj
            check_instance_id(instance.instance_id)
        check_unique_ids([instance.instance_id for instance in instances], "instances to run")
        self.preds_path = self.output_dir / "preds.json"
        self.preds: dict[str, Prediction] = load_predictions(self.preds_path) if self.preds_path.exists() else {}
        self.stop = threading.Event()
        self.cost_limit = total_cost_limit(config)
        check_prices(config.agent.model)  # a cost limit over an unpriced model: refuse before any instance
        self.state = BatchState(total=len(instances))
        self.no_new_work = False

    # ------------------------------------------------------------ resume

    def finished_units(self, instance: Instance) -> dict[str, dict] | None:
        """{trajectory id: info} of a finished instance, or None when it is to be (re)done. With
        branching: once the rollout and every branch it made room for have finished."""
        iid = instance.instance_id
        if self.redo_existing:
            return None
        ids = expected_branches(self.output_dir, iid) if is_branching(self.config) else [iid]
        infos = {uid: self._finished(trajectory_path(self.output_dir, uid), self.keep_errors) for uid in ids or []}
        return infos if ids is not None and all(infos.values()) else None

    @staticmethod
    def _finished(path: Path, keep_errors: bool = True) -> dict | None:
        recover_trajectory(path)  # a run killed mid-way: its .traj assembled from the step log (then redone)
        if not path.exists():
            return None
        try:
            traj = load_trajectory(path)
        except TrajectoryFormatError:
            return None  # a corrupt file is redone
        if not traj.finished or (not keep_errors and "exit_environment_error" in str(traj.info.exit_status)):
            return None
        return traj.info.model_dump()

    # ------------------------------------------------------------ one instance

    def run_one(self, instance: Instance) -> None:
        iid = instance.instance_id
        if self.stop.is_set() or self.no_new_work:
            return
        if self.cost_limit and BATCH_BUDGET.cost >= self.cost_limit:
            # Instances not yet started are left for a later run; running ones finish or autosubmit.
            if not self.no_new_work:
                log.warning("total_cost_limit %.2f reached: no new instances start", self.cost_limit)
            self.no_new_work = True
            return
        with self.state.lock:
            self.state.running.add(iid)
        try:
            units = run_units(self.config, instance, self.output_dir, stop=self.stop, redo=self.redo_existing)
        except Interrupted:
            return
        except Exception as e:  # the instance could not even start: record why, go on
            reason = scrub(f"{type(e).__name__}: {e}")  # a provider error may echo a key
            log.error("%s: %s", iid, reason)
            info = {"submission": None, "exit_status": "exit_environment_error",
                    "exit_reason": reason, "traceback": scrub(traceback.format_exc())}
            TrajectoryWriter(trajectory_path(self.output_dir, iid)).save([], [], info, self.config.raw, None)
            units = [(iid, None, info)]
        finally:
            with self.state.lock:
                self.state.running.discard(iid)
        for uid, _, info in units:
            self.record(uid, info, skipped=False)

    def record(self, iid: str, info: dict, skipped: bool) -> None:
        with self.state.lock:
            self._note(iid, info, skipped)
            self._write_summaries()

    def _note(self, iid: str, info: dict, skipped: bool) -> None:
        self.state.exit_statuses[iid] = str(info.get("exit_status"))
        self.state.note_stats(iid, info)
        if skipped:
            self.state.skipped += 1
        else:
            self.state.done += 1
        self.preds[iid] = Prediction(instance_id=iid, model_name_or_path=model_label(self.config),
                                     model_patch=info.get("submission"))
        # `<id>.pred` beside the `.traj`, as SWE-agent writes it (its merge-preds reads these).
        traj = trajectory_path(self.output_dir, iid)
        if not skipped or not pred_path(traj).exists():
            write_pred(traj, self.preds[iid])

    def _write_summaries(self) -> None:
        """preds.json and the exit-status summary, rewritten atomically (caller holds the lock)."""
        write_predictions(self.preds_path, self.preds)
        by_status: dict[str, list[str]] = {}
        for i, status in sorted(self.state.exit_statuses.items()):
            by_status.setdefault(status, []).append(i)
        atomic_write_text(self.output_dir / EXIT_STATUS_FILE, yaml.safe_dump(by_status, sort_keys=True))

    # ------------------------------------------------------------ the batch

    def run(self, progress: bool = True) -> BatchState:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        todo = []
        with self.state.lock:  # what earlier runs finished, written out once (not once per instance)
            for instance in self.instances:
                units = self.finished_units(instance)
                if units is None:
                    todo.append(instance)
                for uid, info in (units or {}).items():
                    self._note(uid, info, skipped=True)
            self._write_summaries()
            # What finished instances spent counts toward total_cost_limit: a resumed batch does not
            # get a fresh budget.
            spent_before = sum(stats.instance_cost for per in self.state.role_stats.values() for stats in per.values())
            if spent_before:
                BATCH_BUDGET.add(spent_before)
                log.info("instances done before spent $%.4f; it counts toward total_cost_limit", spent_before)
        log.info("%d instances: %d done before, %d to run with %d workers", len(self.instances),
                 self.state.skipped, len(todo), self.num_workers)

        self.spent_before = spent_before
        display = BatchProgress(self.state) if progress else None
        if self.config.executor.type == "ray":
            from sweagent_oec.ray_executor import run_on_ray

            ray = self.config.executor
            if display:
                display.start()
            try:
                run_on_ray(self, todo, display, ray.address, ray.model_dump(include={"num_cpus", "memory", "resources", "max_retries"}))
            finally:
                if display:
                    display.stop()
            return self.state
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="oec-worker")
        try:
            futures = [pool.submit(self.run_one, instance) for instance in todo]
            if display:
                display.start()
            while not all(f.done() for f in futures):
                time.sleep(0.2)
                if display:
                    display.refresh()
        except KeyboardInterrupt:
            log.warning("interrupted: stopping; finished instances are kept, unfinished ones are redone on resume")
            self.stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if display:
                display.stop()
        return self.state


class BatchProgress:
    """Live: a row per running instance (id, role, step, last action, cost) above one line with
    done/total, exit-status counts, cost so far and ETA. Transient: when the batch ends the display
    goes, and the command prints its summary on lines of its own."""

    #: Rows shown at most (the rest are counted).
    MAX_ROWS = 20

    def __init__(self, state: BatchState):
        from rich.console import Console
        from rich.live import Live

        self.state = state
        self.live = Live(console=Console(stderr=True), refresh_per_second=4, transient=True)

    def render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        s = self.state
        with s.lock:
            finished = s.done + s.skipped
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(s.counts().items())) or "-"
            running_ids = set(s.running)
            rate = s.done / max(time.monotonic() - s.started, 1e-9)
            remaining = s.total - finished
            nodes = dict(s.nodes)
        eta = f"{remaining / rate:.0f}s" if s.done and rate > 0 else "?"
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column, justify in (("instance", "left"), ("role", "left"), ("step", "right"), ("last action", "left"),
                                ("cost $", "right")):
            table.add_column(column, justify=justify, no_wrap=True, overflow="ellipsis",
                             max_width=60 if column == "last action" else None)
        notes = progress.running()
        for iid in sorted(running_ids)[: self.MAX_ROWS]:
            note = notes.get(iid)
            if note is None:
                table.add_row(iid, "-", "-", "starting", "-")
            else:
                style = {"student": "blue", "expert": "dark_orange"}.get(note["role"], "")
                table.add_row(iid, Text(note["role"], style=style), str(note["step"]),
                              " ".join(note["action"].split())[:200], f"{note['cost']:.4f}")
        more = len(running_ids) - self.MAX_ROWS
        line = f"[{finished}/{s.total}] running {len(running_ids)}" + (f" (+{more} not shown)" if more > 0 else "")
        line += f" | {counts} | cost ${BATCH_BUDGET.cost:.2f} | ETA {eta}"
        if nodes:
            line += " | per node " + ", ".join(f"{n}: {c}" for n, c in sorted(nodes.items()))
        return Group(table, Text(line)) if running_ids else Text(line)

    def start(self) -> None:
        self.live.start()
        self.refresh()

    def refresh(self) -> None:
        self.live.update(self.render())

    def stop(self) -> None:
        self.live.stop()
