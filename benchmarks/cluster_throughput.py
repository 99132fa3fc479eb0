"""run-batch on a Ray cluster against a model server with a fixed latency, in one run.

A loopback OpenAI-compatible server (its own process, as a vLLM server would be) answers every
request after L seconds; each task takes S steps (S-1 `echo` commands, then submit). A Ray cluster
of N worker nodes (separate raylets on this machine, wholly on 127.0.0.1), each taking W instances at
once, should reach N*W/L steps per second; the achieved rate counts everything (Ray scheduling,
shipping trajectories to the driver, runtime start-up, commands, writes). Then the engine's own cost
per instance: the same instances with one node of W slots under Ray vs W threads.
Targets: >= 0.85 of ideal at 2 nodes x 8 workers; Ray overhead per instance < 5% of a 20-step
instance at L = 0.5 s.

    .venv/bin/python benchmarks/cluster_throughput.py [--nodes 2] [--workers 8] [--latency 0.5] [--steps 20] [--instances 32]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray on 127.0.0.1 only (set before Ray is imported)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from sweagent_oec.batch import BatchRun  # noqa: E402
from sweagent_oec.config import build_config  # noqa: E402
from sweagent_oec.tasks.bundled import materialize_tinycalc  # noqa: E402
from benchmarks.latency_server import LatencyServer  # noqa: E402

def timed_batch(config, instances, out: Path, workers: int, server: LatencyServer) -> tuple[float, int]:
    before = server.requests()
    started = time.perf_counter()
    state = BatchRun(config, instances, out, num_workers=workers).run(progress=False)
    seconds = time.perf_counter() - started
    assert state.counts() == {"submitted": len(instances)}, state.counts()
    return seconds, server.requests() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--instances", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    server = LatencyServer(args.latency, args.steps)
    cluster = None
    try:
        model = {"name": "openai/bench", "api_base": server.url, "api_key": "k", "per_instance_cost_limit": 0, "total_cost_limit": 0}
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

            seconds, steps = timed_batch(on_ray, instances, Path(tmp) / "cluster", 1, server)
            achieved, ideal = steps / seconds, args.nodes * args.workers / args.latency
            print(f"{steps} steps of {args.instances} instances in {seconds:.1f} s on {args.nodes} nodes x {args.workers} workers, "
                  f"latency {args.latency}s")
            print(f"ideal {ideal:.1f} steps/s (N*W/L), achieved {achieved:.1f} steps/s: ratio {achieved / ideal:.2f} (target >= 0.85)")

            # One node, W slots: Ray vs threads on the same instances.
            for node in nodes[1:]:
                cluster.remove_node(node)
            one = instances[: args.workers * 2]
            ray_seconds, _ = timed_batch(on_ray, one, Path(tmp) / "one_ray", 1, server)
            thread_seconds, _ = timed_batch(build_config({"agent": {"model": model}}), one, Path(tmp) / "one_threads",
                                            args.workers, server)
            per_instance = (ray_seconds - thread_seconds) / len(one) * args.workers  # slots run in parallel
            instance_time = args.steps * args.latency
            print(f"one node, {args.workers} slots, {len(one)} instances: Ray {ray_seconds:.1f} s, threads {thread_seconds:.1f} s; "
                  f"Ray overhead {per_instance:.2f} s per instance = {100 * per_instance / instance_time:.1f}% of a "
                  f"{args.steps}-step instance at L={args.latency}s (target < 5%)")
    finally:
        server.__exit__()
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


if __name__ == "__main__":
    main()
