"""Branching vs one student rollout per switch point: student calls and wall time per OEC trajectory.

The same OEC trajectories both ways, in one run: for each of N tinycalc instances, k switch steps
drawn from [start, end] (the paper's range is [0, 30]). Branching runs the student once per
instance up to its last switch step and replays the prefix for every branch; the baseline runs one
switching rollout per (instance, switch step), as the paper did. The student is a loopback
OpenAI-compatible server answering after L seconds (it never submits); the expert replays the
bundled solution. Student calls are counted at the server.

Arithmetic bound: branching needs max(s) student calls where the baseline needs sum(s); for k
uniform draws the expected ratio is about (k/(k+1)) / (k/2) = 2/(k+1): 0.5 at k=3.

    .venv/bin/python benchmarks/branching.py [--instances 6] [--k 3] [--start 0] [--end 30] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweagent_oec.batch import BatchRun  # noqa: E402
from sweagent_oec.config import SwitchingCriteria, build_config  # noqa: E402
from sweagent_oec.models.switching import draw_branch_steps  # noqa: E402
from sweagent_oec.tasks.bundled import materialize_tinycalc  # noqa: E402
from tests.openai_server import OpenAIServer, Reply, tool_call  # noqa: E402

SOLUTION = Path(__file__).resolve().parent.parent / "sweagent_oec/tasks/bundled/tinycalc.replay.jsonl"


def config(url: str, criteria: dict) -> object:
    student = {"name": "openai/student", "api_base": url, "api_key": "k", "per_instance_cost_limit": 0,
               "total_cost_limit": 0, "tools": {"parse_function": {"type": "function_calling"}}}
    expert = {"name": "replay", "replay_path": str(SOLUTION), "tools": {"parse_function": {"type": "function_calling"}}}
    return build_config({"agent": {"model": {"name": "switching", "models": [student, expert],
                                             "switching_criteria": criteria, "seed": 0}}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=6)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--end", type=int, default=30)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    def answer(request):
        step = sum(m["role"] == "assistant" for m in request["messages"])
        return Reply(content=f"step {step}", tool_calls=[tool_call("bash", {"command": f"echo step-{step}"})],
                     delay=args.latency)

    criteria = {"type": "branches", "k": args.k, "start_step": args.start, "end_step": args.end}
    with tempfile.TemporaryDirectory() as tmp, OpenAIServer(answer) as server:
        base = materialize_tinycalc(Path(tmp) / "tasks")
        instances = [base.model_copy(update={"instance_id": f"tiny-{i:02d}"}) for i in range(args.instances)]

        started = time.perf_counter()
        state = BatchRun(config(server.url, criteria), instances, Path(tmp) / "branching", args.workers).run(progress=False)
        branching_time, branching_calls, trajectories = time.perf_counter() - started, len(server.requests), state.done

        # The same switch steps, each as its own switching rollout (the paper's way).
        drawn = SwitchingCriteria(**criteria)
        units = [(i, s) for i in instances for s in draw_branch_steps(drawn, 0, i.instance_id)]
        server.requests.clear()
        started = time.perf_counter()
        for s in sorted({s for _, s in units}):
            batch = [i.model_copy(update={"instance_id": f"{i.instance_id}__b{s}"}) for i, t in units if t == s]
            BatchRun(config(server.url, {"type": "step_count", "threshold": s}), batch, Path(tmp) / "separate",
                     args.workers).run(progress=False)
        separate_time, separate_calls = time.perf_counter() - started, len(server.requests)

    n = len(units)
    print(f"{n} OEC trajectories ({args.instances} instances x k={args.k} switch steps in [{args.start}, {args.end}]), "
          f"student latency {args.latency}s, {args.workers} workers; branching wrote {trajectories}")
    print(f"branching:            {branching_calls:5d} student calls ({branching_calls / n:.1f} per trajectory), "
          f"{branching_time:6.1f} s ({branching_time / n:.2f} s per trajectory)")
    print(f"one rollout per step: {separate_calls:5d} student calls ({separate_calls / n:.1f} per trajectory), "
          f"{separate_time:6.1f} s ({separate_time / n:.2f} s per trajectory)")
    print(f"ratio (branching / separate): student calls {branching_calls / separate_calls:.2f}x "
          f"(bound for uniform draws ~{2 / (args.k + 1):.2f}x), wall time {branching_time / separate_time:.2f}x")


if __name__ == "__main__":
    main()
