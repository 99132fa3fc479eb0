"""Median wall time of a whole agent step against a bare swe-rex session round trip, in one run.

A step here is everything the loop does: the (replay) model answers, the reply is parsed, `echo hi`
runs in the local runtime's session, the observation is rendered, and the `.traj` is rewritten
atomically. The baseline is the same command through swe-rex's LocalDeployment session (the
runtime SWE-agent uses). Target: a step at most 0.1x the swe-rex round trip, at step 5 and 75.

    .venv/bin/python benchmarks/step_overhead.py [--steps 80]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from sweagent_oec.agent.actors import build_actors
from sweagent_oec.agent.loop import Agent
from sweagent_oec.config import build_config
from sweagent_oec.env import make_runtime
from sweagent_oec.tasks.bundled import materialize_tinycalc


def agent_step_times(steps: int, workdir: Path) -> tuple[list[float], dict]:
    replay = workdir / "echo.jsonl"
    replay.write_text("".join(json.dumps({"thought": "check", "action": "echo hi"}) + "\n" for _ in range(steps)))
    config = build_config({"agent": {"model": {"name": "replay", "replay_path": str(replay)}}})
    instance = materialize_tinycalc(workdir)
    actors, schedule = build_actors(config.agent, instance)
    runtime = make_runtime(instance, config.env)
    try:
        agent = Agent(instance, runtime, actors, schedule, workdir / "out" / "bench.traj", replay_config=config.raw)
        agent.start()
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            agent.step()
            times.append(time.perf_counter() - started)
        return times, runtime.info.as_dict()
    finally:
        runtime.close()


async def swerex_times(n: int) -> list[float]:
    from swerex.deployment.local import LocalDeployment
    from swerex.runtime.abstract import BashAction, CreateBashSessionRequest

    deployment = LocalDeployment()
    await deployment.start()
    try:
        await deployment.runtime.create_session(CreateBashSessionRequest())
        times = []
        for _ in range(n):
            started = time.perf_counter()
            await deployment.runtime.run_in_session(BashAction(command="echo hi"))
            times.append(time.perf_counter() - started)
        return times
    finally:
        await deployment.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        steps, info = agent_step_times(args.steps, Path(tmp))
    baseline = statistics.median(asyncio.run(swerex_times(50)))
    early, late = statistics.median(steps[2:12]), statistics.median(steps[70:80] or steps[-10:])
    print(f"runtime: {info['type']}, sandbox {info['sandbox']}, limits {info['limits']}")
    print(f"swe-rex session round trip (echo hi): {baseline * 1e3:8.2f} ms median (baseline)")
    print(f"agent step, steps 2-11:               {early * 1e3:8.2f} ms median  ratio {early / baseline:.3f}x")
    print(f"agent step, steps 70-79:              {late * 1e3:8.2f} ms median  ratio {late / baseline:.3f}x")
    print("target: <= 0.1x at both points")


if __name__ == "__main__":
    main()
