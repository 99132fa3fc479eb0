"""run-batch on a Ray cluster (`--executor ray`): one runner per node, its instances threads of it.

Each node that has what the config's `executor` section asks of one instance (`num_cpus`, `memory`,
custom `resources` such as `docker`) gets one runner actor, pinned to it, asking for W times that,
where W is how many instances the node's resources hold; the runner runs up to W instances at once
as threads of its one process, exactly as run-batch's threads do (`run_units`), so they share one
model client, event loop and `BATCH_BUDGET`, as threads of one process do. The per-step saves go to
node-local scratch; a finished instance returns the files it wrote and the driver writes them into
the output folder atomically, through the same bookkeeping as threads (preds.json, `.pred`,
exit-status summary, resume). So nodes need not share a file system, and resume and every format
behave exactly as with threads.

The driver hands out the instances (at most W at a time to each runner) and does the distributed
parts itself: a runner that dies (its node died) takes its running instances with it; they run again
first on a live runner, at most `max_retries` more times, the attempt recorded in the trajectory
(`info.executor.attempt`); an instance that fails for its own reasons is recorded as with threads,
never retried. Nodes that join during a batch get a runner too (the cluster is looked at every few
seconds); a node whose runner died is not used again in that batch. One accountant actor beside the
driver keeps the batch's cost, so `total_cost_limit` holds across the cluster and no instance starts
once it is spent. Ctrl-C tells every runner to stop (its instances end as threads' do when
interrupted), records what finished, and ends the runners. Every trajectory records the node, the
runner's process and the attempt (`info.executor`).

There is no per-instance-task path: a runner does everything a task did, and pays for a process,
a model client and their imports once per node instead of once per instance slot. `eval --executor
ray` stays one task per instance: grading is a subprocess per instance, not model calls.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sweagent_oec.errors import UserError

if TYPE_CHECKING:
    from sweagent_oec.batch import BatchRun, BatchProgress
    from sweagent_oec.tasks.instances import Instance

log = logging.getLogger(__name__)

#: What a runner ships back per instance: the trajectories and rollouts it wrote (per-step logs stay in scratch).
SHIPPED = ("*.traj", "*.rollout.json")
#: How often the driver looks for nodes that joined (seconds).
NODE_POLL = 2.0
#: How long the driver waits for a runner to be ready when none is, before giving up on the rest.
NO_RUNNER_WAIT = 120.0
#: How long Ctrl-C waits for the runners' instances to stop before ending the runners.
INTERRUPT_WAIT = 10.0


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


class Accountant:
    """The batch's one cost counter (an actor beside the driver: its calls run one at a time)."""

    def __init__(self, spent: float):
        self.cost = spent

    def add(self, cost: float) -> float:
        self.cost += cost
        return self.cost

    def total(self) -> float:
        return self.cost


class NodeRunner:
    """One node's instances, as threads of this actor's one process (`max_concurrency` = W)."""

    def __init__(self, config, accountant, cost_limit: float, spent_before: float):
        import ray

        from sweagent_oec.models.base import BATCH_BUDGET

        # What the instances will import, imported once before the runner says it is ready (litellm: ~4 s
        # of CPU), so that W instances do not start by waiting on one import together.
        import sweagent_oec.runner  # noqa: F401
        model = config.agent.model
        if any(m.name not in ("replay", "oracle") for m in (model.models or [model])):
            import sweagent_oec.models.litellm_model  # noqa: F401

        self.config, self.accountant, self.cost_limit = config, accountant, cost_limit
        self.stop = threading.Event()
        # This process serves this batch alone: its instances share the process's budget as run-batch's
        # threads do; with a limit every priced call also goes to the accountant, which returns the
        # whole cluster's total (BatchBudget.share_with).
        BATCH_BUDGET.cost = spent_before
        BATCH_BUDGET.share_with((lambda cost: ray.get(accountant.add.remote(cost))) if cost_limit else None)
        context = ray.get_runtime_context()
        self.place = {"type": "ray", "node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                      "pid": os.getpid()}

    def where(self) -> dict:
        """Ready: where this runner runs (the driver waits for this before handing it instances)."""
        return self.place

    def interrupt(self) -> None:
        self.stop.set()

    def run(self, instance: "Instance", attempt: int) -> dict:
        """One instance, as a thread of run-batch runs it; returns what the driver needs to record it."""
        import ray

        from sweagent_oec.exits import Interrupted
        from sweagent_oec.runner import run_units

        where = {**self.place, "attempt": attempt}
        if self.stop.is_set():
            return {"interrupted": True, "executor": where}
        if self.cost_limit and ray.get(self.accountant.total.remote()) >= self.cost_limit:
            return {"not_started": True, "executor": where}
        scratch = Path(tempfile.mkdtemp(prefix="oec-ray-"))
        try:
            try:
                units = run_units(self.config, instance, scratch, stop=self.stop)
            except Interrupted:
                return {"interrupted": True, "executor": where}
            except Exception as e:  # the instance could not even start: the driver records why
                import traceback

                return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(), "executor": where}
            files = {str(p.relative_to(scratch)): p.read_text() for pattern in SHIPPED for p in scratch.rglob(pattern)}
            return {"units": [(uid, str(path.relative_to(scratch)), info) for uid, path, info in units],
                    "files": files, "executor": where}
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def instance_ask(resources: dict) -> dict[str, float]:
    """What one instance asks of a node, in Ray's resource names (only what is asked)."""
    ask = {"CPU": resources.get("num_cpus", 1), "memory": resources.get("memory") or 0, **(resources.get("resources") or {})}
    ask = {name: float(amount) for name, amount in ask.items() if amount}
    if not ask:
        raise UserError("executor: num_cpus is 0 and no memory or resources are asked: nothing bounds how many "
                        "instances a node takes; ask for something per instance (e.g. num_cpus: 0.25, or resources: {slot: 1})")
    return ask


def slots(node_resources: dict, ask: dict[str, float]) -> int:
    """How many instances a node holds: W, the fewest of its resources over what one instance asks."""
    return min(math.floor(node_resources.get(name, 0.0) / amount + 1e-9) for name, amount in ask.items())


LOST = ("RayActorError", "ActorUnschedulableError", "NodeDiedError", "WorkerCrashedError", "ObjectLostError")


def _lost(ray, error: Exception) -> bool:
    """The runner (its node, its process) is gone, as opposed to the method failing by itself."""
    return any(isinstance(error, getattr(ray.exceptions, name)) for name in LOST)


@dataclass
class Runner:
    """The driver's view of one node's runner."""

    actor: object
    node_id: str
    capacity: int
    ready: object  # the ref of where(); None once it answered
    place: dict = field(default_factory=dict)
    running: set = field(default_factory=set)  # refs of its instances in flight


class Cluster:
    """Places one runner on every node that holds at least one instance, and hands them instances."""

    def __init__(self, ray, batch: "BatchRun", resources: dict, accountant):
        self.ray, self.batch, self.accountant = ray, batch, accountant
        self.ask = instance_ask(resources)
        self.runners: dict[str, Runner] = {}  # node id -> its runner
        self.lost_nodes: set[str] = set()
        self.looked = 0.0

    def look(self, force: bool = False) -> None:
        """Give a runner to every alive node that has none yet and holds an instance."""
        if not force and time.monotonic() - self.looked < NODE_POLL:
            return
        self.looked = time.monotonic()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        for node in self.ray.nodes():
            node_id, capacity = node["NodeID"], slots(node.get("Resources") or {}, self.ask)
            if not node.get("Alive") or capacity < 1 or node_id in self.runners or node_id in self.lost_nodes:
                continue
            memory = self.ask.get("memory", 0) * capacity
            actor = self.ray.remote(concurrency_groups={"control": 1})(NodeRunner).options(
                num_cpus=self.ask.get("CPU", 0) * capacity, memory=memory or None,
                resources={k: v * capacity for k, v in self.ask.items() if k not in ("CPU", "memory")} or None,
                max_concurrency=capacity, max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(self.batch.config, self.accountant, self.batch.cost_limit, self.batch.spent_before)
            self.runners[node_id] = Runner(actor, node_id, capacity, actor.where.options(concurrency_group="control").remote())
            log.info("node %s: a runner of %d instance slots", node_id[:8], capacity)

    def answer(self, timeout: float) -> None:
        """Note the runners that became ready (or died before they were)."""
        starting = {r.ready: r for r in self.runners.values() if r.ready is not None}
        if not starting:
            return
        ready, _ = self.ray.wait(list(starting), num_returns=len(starting), timeout=timeout)
        for ref in ready:
            runner = starting[ref]
            try:
                runner.place, runner.ready = self.ray.get(ref), None
            except self.ray.exceptions.RayError as e:
                log.warning("node %s: its runner did not start (%s); the node is not used", runner.node_id[:8], type(e).__name__)
                self.drop(runner)

    def drop(self, runner: Runner) -> None:
        self.runners.pop(runner.node_id, None)
        self.lost_nodes.add(runner.node_id)
        try:
            self.ray.kill(runner.actor)
        except Exception:  # already gone with its node
            pass

    def free(self) -> list[Runner]:
        """Ready runners with a free slot, the least busy first."""
        return sorted((r for r in self.runners.values() if r.ready is None and len(r.running) < r.capacity),
                      key=lambda r: len(r.running) / r.capacity)

    def end(self) -> None:
        for runner in list(self.runners.values()):
            try:
                self.ray.kill(runner.actor)
            except Exception:
                pass
        self.runners.clear()


def run_on_ray(batch: "BatchRun", todo: list["Instance"], display: "BatchProgress | None", address: str | None,
               resources: dict) -> None:
    """Run `todo` on one runner per node and record each result through `batch` (the driver alone writes)."""
    if not todo:
        return
    if batch.cost_limit and batch.spent_before >= batch.cost_limit:  # spent by earlier runs: no runner to start
        record(batch, todo[0], {"not_started": True})
        return
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    connect(address)
    # The accountant lives beside the driver: a worker node that dies must not take the count with it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    accountant = ray.remote(Accountant).options(num_cpus=0, scheduling_strategy=here).remote(batch.spent_before)
    cluster = Cluster(ray, batch, resources, accountant)
    retries = resources.get("max_retries", 3)
    queue, attempts = deque(todo), {}
    flying: dict = {}  # ref -> (instance, runner)
    idle_since = time.monotonic()
    try:
        cluster.look(force=True)
        if not cluster.runners:
            raise UserError(f"no node of the Ray cluster holds one instance (each asks {cluster.ask}); "
                            f"the cluster has {ray.cluster_resources()}")
        while queue or flying:
            cluster.look()
            cluster.answer(timeout=0 if flying else 0.2)
            if batch.no_new_work:
                queue.clear()  # instances not yet started are left for a later run
            for runner in cluster.free():
                while queue and len(runner.running) < runner.capacity:
                    instance = queue.popleft()
                    iid = instance.instance_id
                    attempts[iid] = attempts.get(iid, 0) + 1
                    ref = runner.actor.run.remote(instance, attempts[iid])
                    flying[ref] = (instance, runner)
                    runner.running.add(ref)
                    with batch.state.lock:
                        batch.state.running.add(iid)
            if not flying:
                if queue and time.monotonic() - idle_since > NO_RUNNER_WAIT:
                    raise UserError(f"no Ray runner was ready for {NO_RUNNER_WAIT:.0f}s; {len(queue)} instances are left "
                                    f"for a rerun (each asks {cluster.ask})")
                if not any(r.ready is not None for r in cluster.runners.values()):
                    time.sleep(0.2)  # no runner left: wait for a node to join
                continue
            idle_since = time.monotonic()
            # Back at once when one finishes, with whatever else has finished too: a slot waits for no poll.
            ready, rest = ray.wait(list(flying), num_returns=1, timeout=0.2)
            if ready and rest:
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                instance, runner = flying.pop(ref)
                runner.running.discard(ref)
                take(ray, batch, cluster, queue, attempts, retries, instance, runner, ref)
            if display:
                display.refresh()
    except KeyboardInterrupt:
        log.warning("interrupted: stopping the runners; finished instances are kept, unfinished ones are redone on resume")
        for runner in list(cluster.runners.values()):
            runner.actor.interrupt.options(concurrency_group="control").remote()
        queue.clear()
        ready, _ = ray.wait(list(flying), num_returns=len(flying), timeout=INTERRUPT_WAIT) if flying else ([], [])
        for ref in ready:
            instance, runner = flying.pop(ref)
            take(ray, batch, cluster, queue, attempts, retries, instance, runner, ref)  # a lost one is queued: not run
        raise
    finally:
        cluster.end()
        ray.kill(accountant)
        batch.state.running.clear()


def take(ray, batch: "BatchRun", cluster: Cluster, queue: deque, attempts: dict, retries: int,
         instance: "Instance", runner: Runner, ref) -> None:
    """One answer from a runner: recorded; or, when the runner died with it, queued again (bounded)."""
    iid = instance.instance_id
    try:
        result = ray.get(ref)
    except ray.exceptions.RayError as e:
        reason = f"ray: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        where = {**runner.place, "attempt": attempts[iid]} if runner.place else {"type": "ray", "attempt": attempts[iid]}
        if not _lost(ray, e):  # the method itself failed: the instance's own failure, not retried
            result = {"error": reason, "executor": where}
        else:
            if runner.node_id in cluster.runners:
                log.warning("node %s: its runner is gone (%s); its instances run again elsewhere", runner.node_id[:8], type(e).__name__)
                cluster.drop(runner)
            if attempts[iid] <= retries:
                with batch.state.lock:
                    batch.state.running.discard(iid)
                queue.appendleft(instance)
                return
            result = {"error": f"{reason} (its node was lost {attempts[iid]} times)", "executor": where}
    if result.get("interrupted"):
        with batch.state.lock:
            batch.state.running.discard(iid)
        return
    record(batch, instance, result)


def record(batch: "BatchRun", instance: "Instance", result: dict) -> None:
    """Write what a runner shipped into the output folder, then note it as a thread's result is noted."""
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
    # The driver's budget shows the batch's cost in the progress line (as threads' calls add to it);
    # the limit itself is the accountant's.
    from sweagent_oec.models.base import BATCH_BUDGET

    with batch.state.lock:
        spent = sum(per[uid].instance_cost for uid, _ in units for per in batch.state.role_stats.values() if uid in per)
    BATCH_BUDGET.add(spent)


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
