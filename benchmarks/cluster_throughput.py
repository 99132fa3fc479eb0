"""run-batch on a Ray cluster against a model server with a fixed latency, in one run.

A loopback OpenAI-compatible server (its own process, as a vLLM server would be) answers every
request after L seconds; each task takes S steps (S-1 `echo` commands, then submit). A Ray cluster
of N worker nodes (separate raylets on this machine, wholly on 127.0.0.1), each taking W instances at
once, should reach N*W/L steps per second; the achieved rate counts everything (Ray scheduling,
shipping trajectories to the driver, runtime start-up, commands, writes). The same instances then run
as N*W threads of one process on the same machine, for comparison. Then the engine's own cost per
instance: the same instances with one node of W slots under Ray vs W threads.
Targets: >= 0.85 of ideal at 2 nodes x 8 workers; Ray overhead per instance < 5% of a 20-step
instance at L = 0.5 s.

Where the time and the CPU go is printed beside each rate: per instance, the mean time inside its
Ray task (the ideal is S*L) and the time a slot waited between tasks (Ray's scheduling and shipping
results); and the CPU seconds per step of each kind of process (Ray workers, raylets, GCS, the driver,
the model server), with the whole machine's (other users included) and its idle time. On 2 cores,
16 instances at once need about as much CPU as the cores have: the CPU lines show whose it is.

Ray starts its workers at nice 15 (`worker_niceness`), so that the raylet and GCS come first; the
threads arm runs at nice 0. On a machine where anything else runs (other users, the model server, the
driver), a niced worker and the commands it starts wait for all of it: 16 instances starting at once
took 1.2-1.4 s each to make their runtime, against 0.5 s at nice 0 or in threads (measured on this
machine under load). So the cluster runs its workers at nice 0 (`RAY_worker_niceness=0`, as the README
advises for nodes that run anything else), and the cluster rate is measured again with the workers
reniced to Ray's 15 (when this process may renice them), to show the difference in the same run.
`--ray-env KEY=VALUE` passes other Ray settings to the cluster's processes.

    .venv/bin/python benchmarks/cluster_throughput.py [--nodes 2] [--workers 8] [--latency 0.5] [--steps 20] [--instances 32]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray on 127.0.0.1 only (set before Ray is imported)
os.environ.setdefault("RAY_worker_niceness", "0")  # workers at the priority threads run at (Ray's default: 15)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from sweagent_oec.batch import BatchRun  # noqa: E402
from sweagent_oec.config import build_config  # noqa: E402
from sweagent_oec.tasks.bundled import materialize_tinycalc  # noqa: E402
from benchmarks.latency_server import LatencyServer  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
KINDS = (("raylet", "raylets"), ("gcs_server", "GCS"), ("log_monitor", "other Ray"), ("dashboard", "other Ray"),
         ("monitor.py", "other Ray"), ("runtime_env", "other Ray"), ("DashboardAgent", "other Ray"),
         ("RuntimeEnvAgent", "other Ray"), ("ray::", "Ray workers"),
         ("default_worker", "Ray workers"), ("openai_server", "model server"))


def processes() -> dict[int, tuple[str, float]]:
    """This process and its descendants: pid -> (kind, CPU seconds incl. reaped children), from /proc."""
    parents, stats = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        pid = int(entry)
        parents[pid] = int(fields[1])
        stats[pid] = (cmdline, sum(int(x) for x in fields[11:15]) / TICKS)  # utime stime cutime cstime
    me, ours = os.getpid(), {}
    for pid, (cmdline, cpu) in stats.items():
        p = pid
        while p not in (me, 0, 1) and p in parents:
            p = parents[p]
        if p == me:
            kind = "driver" if pid == me else next((name for key, name in KINDS if key in cmdline), "commands")
            ours[pid] = (kind, cpu)
    return ours


def machine() -> tuple[float, float]:
    """The whole machine's busy and idle CPU seconds so far."""
    values = [int(x) / TICKS for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, idle


class CPU:
    """CPU seconds per kind of process between start and stop (a process that ended in between counts
    what its parent reaped)."""

    def __enter__(self) -> "CPU":
        self.before, self.machine_before = processes(), machine()
        return self

    def __exit__(self, *exc) -> None:
        after, (busy, idle) = processes(), machine()
        self.kinds: Counter = Counter()
        for pid, (kind, cpu) in after.items():
            self.kinds[kind] += cpu - self.before.get(pid, (kind, 0.0))[1]
        self.busy, self.idle = busy - self.machine_before[0], idle - self.machine_before[1]

    def report(self, steps: int) -> str:
        ours = sum(self.kinds.values())
        parts = ", ".join(f"{kind} {1000 * cpu / steps:.1f}" for kind, cpu in self.kinds.most_common() if cpu >= 0.005)
        return (f"  CPU ms per step: {parts}; all of this run {1000 * ours / steps:.1f}; whole machine "
                f"{1000 * self.busy / steps:.1f} (others' {1000 * max(self.busy - ours, 0) / steps:.1f}), idle "
                f"{1000 * self.idle / steps:.1f}")


def renice(value: int) -> bool:
    """Set every Ray worker process of this run (and so the commands it starts next) to nice `value`."""
    for pid, (kind, _) in processes().items():
        if kind == "Ray workers":
            try:
                os.setpriority(os.PRIO_PROCESS, pid, value)
            except PermissionError:
                return False
            except ProcessLookupError:  # ended since
                pass
    return True


def timed_batch(config, instances, out: Path, workers: int, server: LatencyServer) -> tuple[float, int, CPU]:
    before = server.requests()
    with CPU() as cpu:
        started = time.perf_counter()
        state = BatchRun(config, instances, out, num_workers=workers).run(progress=False)
        seconds = time.perf_counter() - started
    assert state.counts() == {"submitted": len(instances)}, state.counts()
    return seconds, server.requests() - before, cpu


def task_times(since_us: float, seconds: float) -> str:
    """From Ray's task events: the mean time inside a task, and how long slots waited between tasks."""
    time.sleep(2)  # workers report task events every second
    logging.getLogger("ray").setLevel(logging.ERROR)  # ray.timeline() warns that it will read the dashboard one day
    spans = defaultdict(list)
    for event in ray.timeline():
        if event.get("ph") == "X" and event.get("cat") == "task::run_remote" and event["ts"] >= since_us:
            spans[event["tid"]].append((event["ts"], event["ts"] + event["dur"]))
    inside = [(end - start) / 1e6 for runs in spans.values() for start, end in runs]
    if not inside:
        return "  (no task events from Ray)"
    gaps = [(b[0] - a[1]) / 1e6 for runs in spans.values() for a, b in zip(sorted(runs), sorted(runs)[1:])]
    first = min(start for runs in spans.values() for start, _ in runs)
    return (f"  per instance: {statistics.mean(inside):.2f} s inside its Ray task (max {max(inside):.2f}); "
            f"slots waited {statistics.mean(gaps) if gaps else 0:.3f} s between tasks; first task began "
            f"{first / 1e6 - since_us / 1e6:.2f} s after submission; {len(spans)} worker processes ran tasks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--instances", type=int, default=32)
    parser.add_argument("--ray-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment setting for the cluster's processes (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for setting in args.ray_env:
        key, _, value = setting.partition("=")
        os.environ[key] = value
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"RAY_worker_niceness={os.environ['RAY_worker_niceness']}")

    server = LatencyServer(args.latency, args.steps)
    cluster = None
    try:
        model = {"name": "openai/bench", "api_base": server.url, "api_key": "k", "per_instance_cost_limit": 0, "total_cost_limit": 0}
        threads = build_config({"agent": {"model": model}})
        with tempfile.TemporaryDirectory() as tmp:
            base = materialize_tinycalc(Path(tmp))
            instances = [base.model_copy(update={"instance_id": f"bench-{i:03d}"}) for i in range(args.instances)]
            # Each node offers W slots of a custom resource; one instance takes one slot.
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
            nodes = [cluster.add_node(num_cpus=args.workers, resources={"slot": args.workers}) for _ in range(args.nodes)]
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
            ray_config = {"type": "ray", "num_cpus": 0, "resources": {"slot": 1}}
            on_ray = build_config({"agent": {"model": model}, "executor": ray_config})
            # Warm-up: worker processes start once per node and slot; a long batch never notices.
            timed_batch(on_ray, [base.model_copy(update={"instance_id": f"warm-{i}"}) for i in range(args.nodes * args.workers)],
                        Path(tmp) / "warm", 1, server)
            timed_batch(threads, instances[: args.nodes * args.workers], Path(tmp) / "warm_threads", args.nodes * args.workers, server)

            since = time.time() * 1e6
            seconds, steps, cpu = timed_batch(on_ray, instances, Path(tmp) / "cluster", 1, server)
            achieved, ideal = steps / seconds, args.nodes * args.workers / args.latency
            print(f"{steps} steps of {args.instances} instances in {seconds:.1f} s on {args.nodes} nodes x {args.workers} workers, "
                  f"latency {args.latency}s (load average {os.getloadavg()[0]:.2f})")
            print(f"ideal {ideal:.1f} steps/s (N*W/L), achieved {achieved:.1f} steps/s: ratio {achieved / ideal:.2f} (target >= 0.85)")
            print(task_times(since, seconds))
            print(cpu.report(steps))
            t_seconds, t_steps, t_cpu = timed_batch(threads, instances, Path(tmp) / "threads", args.nodes * args.workers, server)
            print(f"the same on {args.nodes * args.workers} threads of one process: {t_seconds:.1f} s, ratio "
                  f"{t_steps / t_seconds / ideal:.2f} (load average {os.getloadavg()[0]:.2f})")
            print(t_cpu.report(t_steps))
            if renice(15):
                n_seconds, n_steps, n_cpu = timed_batch(on_ray, instances, Path(tmp) / "cluster_niced", 1, server)
                print(f"the cluster again with its workers at nice 15 (Ray's default): {n_seconds:.1f} s, ratio "
                      f"{n_steps / n_seconds / ideal:.2f} (load average {os.getloadavg()[0]:.2f})")
                print(n_cpu.report(n_steps))
                renice(int(os.environ["RAY_worker_niceness"]))

            # One node, W slots: Ray vs threads on the same instances.
            for node in nodes[1:]:
                cluster.remove_node(node)
            one = instances[: args.workers * 2]
            ray_seconds, _, _ = timed_batch(on_ray, one, Path(tmp) / "one_ray", 1, server)
            thread_seconds, _, _ = timed_batch(threads, one, Path(tmp) / "one_threads", args.workers, server)
            per_instance = (ray_seconds - thread_seconds) / len(one) * args.workers  # slots run in parallel
            instance_time = args.steps * args.latency
            print(f"one node, {args.workers} slots, {len(one)} instances: Ray {ray_seconds:.1f} s, threads {thread_seconds:.1f} s; "
                  f"Ray overhead {per_instance:.2f} s per instance = {100 * per_instance / instance_time:.1f}% of a "
                  f"{args.steps}-step instance at L={args.latency}s (target < 5%)")
            print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        server.__exit__()
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


if __name__ == "__main__":
    main()
