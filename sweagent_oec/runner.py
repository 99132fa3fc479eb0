"""Run one instance: make its runtime (tools and start-up commands included), build the actors, run the loop, clean up."""

from __future__ import annotations

import threading
from pathlib import Path

from sweagent_oec.agent.actors import build_actors
from sweagent_oec.agent.loop import Agent
from sweagent_oec.config import RunConfig
from sweagent_oec.data.trajectory import trajectory_path
from sweagent_oec.env import make_runtime
from sweagent_oec.tasks.instances import Instance


def run_instance(config: RunConfig, instance: Instance, output_dir: Path | str | None = None,
                 stop: threading.Event | None = None) -> tuple[Path, dict]:
    """Returns the trajectory's path and its `info` (exit status, submission, stats)."""
    path = trajectory_path(output_dir or config.output_dir, instance.instance_id)
    actors, schedule = build_actors(config.agent, instance)
    runtime = make_runtime(instance, config.env)
    try:
        agent = Agent(instance, runtime, actors, schedule, path, replay_config=config.raw, stop=stop)
        return path, agent.run()
    finally:
        runtime.close()


def run_units(config: RunConfig, instance: Instance, output_dir: Path | str | None = None,
              stop: threading.Event | None = None, redo: bool = False) -> list[tuple[str, Path, dict]]:
    """Every trajectory one instance yields, as (id, path, info): itself, or with a `branches`
    criterion one per branch point (`<id>__b<s>`), all from one student rollout."""
    from sweagent_oec.branching import is_branching, run_branches

    if is_branching(config):
        return run_branches(config, instance, output_dir or config.output_dir, stop, redo)
    path, info = run_instance(config, instance, output_dir, stop)
    return [(instance.instance_id, path, info)]
