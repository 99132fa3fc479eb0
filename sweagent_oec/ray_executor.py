"""run-batch on a Ray cluster (`--executor ray`): each instance is a Ray task; the driver writes.

Workers run the instance exactly as a thread would (`run_units`), with their per-step saves in
node-local scratch; on completion the task returns the files it wrote and the driver writes them
into the output folder atomically, through the same bookkeeping as threads (preds.json, `.pred`,
exit-status summary, resume). So nodes need not share a file system, and resume and every format
behave exactly as with threads.

The engine does the distributed parts: a node that dies takes its running tasks with it and Ray
runs them again elsewhere (`max_retries`; an instance that fails for its own reasons is recorded as
with threads, never retried); one accountant actor keeps the batch's cost, so `total_cost_limit`
holds across the cluster and no task starts once it is spent; Ctrl-C cancels the cluster's tasks
and keeps what finished. Every trajectory records the node that ran it and the attempt
(`info.executor`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from sweagent_oec.errors import UserError

if TYPE_CHECKING:
    from sweagent_oec.batch import BatchRun, BatchProgress
    from sweagent_oec.tasks.instances import Instance

log = logging.getLogger(__name__)

#: What a task ships back: the trajectories and rollouts it wrote (per-step logs stay in scratch).
SHIPPED = ("*.traj", "*.rollout.json")


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'sweagent-oec[ray]' (ray==2.60.0)") from None
    return ray


def connect(address: str | None) -> None:
    """Join the cluster at `address` ('auto': a running one; None: RAY_ADDRESS, else a local Ray)."""
    ray = _ray()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # A Ray started here runs its workers at the priority threads run at (unless RAY_worker_niceness says
    # otherwise; a running cluster keeps its own setting). Ray's default, nice 15 so that the raylet
    # comes first, makes every instance and the commands it starts wait for anything else on the
    # machine: 16 runtimes starting at once took 1.2-1.4 s each instead of 0.5 s.
    os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"cannot reach the Ray cluster at {address or 'a new local instance'}: {str(e).splitlines()[0]}") from None


def _accountant_class():
    ray = _ray()

    @ray.remote(num_cpus=0)
    class Accountant:
        """The batch's one cost counter and attempt register (an actor: its calls run one at a time)."""

        def __init__(self, spent: float):
            self.cost = spent
            self.attempts: Counter = Counter()

        def add(self, cost: float) -> float:
            self.cost += cost
            return self.cost

        def start(self, instance_id: str) -> tuple[int, float]:
            self.attempts[instance_id] += 1
            return self.attempts[instance_id], self.cost

    return Accountant


def run_remote(config, instance: "Instance", accountant, cost_limit: float) -> dict:
    """One instance on a worker node; returns what the driver needs to record it."""
    import ray

    from sweagent_oec.models.base import BATCH_BUDGET
    from sweagent_oec.runner import run_units

    context = ray.get_runtime_context()
    started = accountant.start.remote(instance.instance_id)

    def where() -> dict:
        return {"type": "ray", "node_id": context.get_node_id(), "attempt": ray.get(started)[0],
                "node_ip": ray.util.get_node_ip_address()}

    if cost_limit:
        # Only a limit needs the batch's total before starting; otherwise the start is counted while
        # the instance runs (the round trip costs ~0.15 s when 16 tasks start at once on 2 cores).
        spent = ray.get(started)[1]
        if spent >= cost_limit:
            return {"not_started": True, "executor": where()}
    # A worker process runs tasks of many batches: this task's budget is this batch's, as the
    # accountant counts it (one round trip per priced call, only where a limit needs the total).
    BATCH_BUDGET.cost = spent if cost_limit else 0.0
    BATCH_BUDGET.share_with((lambda cost: ray.get(accountant.add.remote(cost))) if cost_limit else None)
    scratch = Path(tempfile.mkdtemp(prefix="oec-ray-"))
    try:
        try:
            units = run_units(config, instance, scratch)
        except Exception as e:  # the instance could not even start: the driver records why
            import traceback

            return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(), "executor": where()}
        files = {str(p.relative_to(scratch)): p.read_text() for pattern in SHIPPED for p in scratch.rglob(pattern)}
        return {"units": [(uid, str(path.relative_to(scratch)), info) for uid, path, info in units],
                "files": files, "executor": where()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_on_ray(batch: "BatchRun", todo: list["Instance"], display: "BatchProgress | None", address: str | None,
               resources: dict) -> None:
    """Run `todo` as Ray tasks and record each result through `batch` (the driver alone writes)."""
    ray = _ray()
    import ray.util.scheduling_strategies  # noqa: F401

    connect(address)
    # The accountant lives beside the driver: a worker node that dies must not take the count with it.
    here = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    accountant = _accountant_class().options(scheduling_strategy=here).remote(batch.spent_before)
    task = ray.remote(run_remote).options(max_retries=resources.get("max_retries", 3), retry_exceptions=False,
                                          num_cpus=resources.get("num_cpus", 1), memory=resources.get("memory"),
                                          resources=resources.get("resources") or None)
    refs = {task.remote(batch.config, instance, accountant, batch.cost_limit): instance for instance in todo}
    for instance in todo:
        batch.state.running.add(instance.instance_id)
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
            for ref in ready:
                instance = refs[ref]
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:  # retries spent (node deaths), or the task itself broke
                    result = {"error": f"ray: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                              "executor": {"type": "ray"}}
                record(batch, instance, result)
            if display:
                display.refresh()
    except KeyboardInterrupt:
        log.warning("interrupted: cancelling the cluster's tasks; finished instances are kept")
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        batch.state.running.clear()


def record(batch: "BatchRun", instance: "Instance", result: dict) -> None:
    """Write what a task shipped into the output folder, then note it as a thread's result is noted."""
    from sweagent_oec.data.trajectory import TrajectoryWriter, trajectory_path
    from sweagent_oec.files import atomic_write_text

    iid, where = instance.instance_id, result.get("executor", {})
    with batch.state.lock:
        batch.state.running.discard(iid)
    if result.get("not_started"):
        if not batch.no_new_work:
            log.warning("total_cost_limit %.2f reached on the cluster: no new instances start", batch.cost_limit)
        batch.no_new_work = True
        return
    if "error" in result:
        from sweagent_oec.secrets import scrub

        info = {"submission": None, "exit_status": "exit_environment_error", "exit_reason": scrub(result["error"]),
                "traceback": scrub(result.get("traceback", "")), "executor": where}
        log.error("%s: %s", iid, info["exit_reason"])
        TrajectoryWriter(trajectory_path(batch.output_dir, iid)).save([], [], info, batch.config.raw, None)
        units = [(iid, info)]
    else:
        for relative, text in result["files"].items():
            if relative.endswith(".traj"):
                data = json.loads(text)
                data.setdefault("info", {})["executor"] = where
                text = json.dumps(data, indent=1)
            atomic_write_text(batch.output_dir / relative, text)
        units = [(uid, {**info, "executor": where}) for uid, _, info in result["units"]]
    with batch.state.lock:
        batch.state.nodes[where.get("node_ip", "?") + ":" + str(where.get("node_id", "?"))[:8]] += 1
    for uid, info in units:
        batch.record(uid, info, skipped=False)


def wait_for_nodes(count: int, timeout: float = 60) -> None:
    """Block until the cluster has `count` alive nodes (tests and benchmarks start them asynchronously)."""
    ray = _ray()
    deadline = time.monotonic() + timeout
    while sum(1 for n in ray.nodes() if n.get("Alive")) < count:
        if time.monotonic() > deadline:
            raise UserError(f"the Ray cluster did not reach {count} nodes in {timeout:.0f}s")
        time.sleep(0.2)


# ---------------------------------------------------------------- eval


def eval_remote(instance: "Instance", prediction, opts) -> dict:
    """Grade one instance on a worker, into node-local scratch; return its files and report."""
    import dataclasses

    from sweagent_oec.harness.evaluate import evaluate_instance

    scratch = Path(tempfile.mkdtemp(prefix="oec-ray-eval-"))
    try:
        local = dataclasses.replace(opts, output_dir=scratch, executor="threads", progress=False)
        report = evaluate_instance(instance, prediction, local)
        folder = local.run_dir / instance.instance_id
        files = {p.name: p.read_text(errors="replace") for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}
        return {"report": report, "files": files}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def eval_on_ray(pending: list["Instance"], predictions: dict, opts, reports: dict) -> None:
    """`eval --executor ray`: each instance a Ray task; the driver writes its folder, report.json last
    (the report marks the instance done, so a crash in between leaves it to be redone)."""
    from sweagent_oec.files import atomic_write_text
    from sweagent_oec.harness.report import REPORT_NAME

    ray = _ray()
    connect(opts.ray_address)
    task = ray.remote(eval_remote).options(max_retries=3, retry_exceptions=False, num_cpus=1)
    refs = {task.remote(instance, predictions.get(instance.instance_id), opts): instance for instance in pending}
    waiting = list(refs)
    try:
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in ready:
                instance = refs[ref]
                folder = opts.run_dir / instance.instance_id
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:
                    from sweagent_oec.harness.report import instance_report, write_report

                    prediction = predictions.get(instance.instance_id)
                    report = instance_report(model_patch=prediction.model_patch if prediction else None,
                                             model_name_or_path=prediction.model_name_or_path if prediction else "gold",
                                             error=f"environment_error: ray: {type(e).__name__}")
                    write_report(folder / REPORT_NAME, report)
                    reports[instance.instance_id] = report
                    continue
                for name, text in result["files"].items():
                    if name != REPORT_NAME:
                        atomic_write_text(folder / name, text)
                atomic_write_text(folder / REPORT_NAME, result["files"].get(REPORT_NAME) or json.dumps(result["report"], indent=4) + "\n")
                reports[instance.instance_id] = result["report"]
    except KeyboardInterrupt:
        for ref in waiting:
            ray.cancel(ref, force=True)
        raise
