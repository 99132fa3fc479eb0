"""run-batch throughput against a model server with a fixed latency, in one run.

A loopback OpenAI-compatible server, in its own process as a vLLM server would be, answers every
request after L seconds; each task takes S steps (S-1 `echo` commands, then submit). With W workers
the ideal is W/L steps per second; the achieved rate counts everything a batch does (runtime
start-up and close, commands, trajectory writes, preds.json). One model call before the clock
starts pays litellm's one-time lazy imports (~1 s per process), which a long batch never notices.
Target: >= 0.9 of ideal at W=16 on a 2-core machine.

    .venv/bin/python benchmarks/batch_throughput.py [--workers 16] [--latency 0.5] [--steps 20] [--instances 32]
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
from sweagent_oec.config import ModelConfig, build_config  # noqa: E402
from sweagent_oec.models.litellm_model import LiteLLMModel  # noqa: E402
from sweagent_oec.tasks.bundled import materialize_tinycalc  # noqa: E402
from benchmarks.latency_server import LatencyServer  # noqa: E402

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--instances", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with LatencyServer(args.latency, args.steps) as server:
        model = {"name": "openai/bench", "api_base": server.url, "api_key": "k", "per_instance_cost_limit": 0}
        LiteLLMModel(ModelConfig(**model)).query([{"role": "user", "content": "warm-up"}])
        with tempfile.TemporaryDirectory() as tmp:
            base = materialize_tinycalc(Path(tmp))
            instances = [base.model_copy(update={"instance_id": f"bench-{i:03d}"}) for i in range(args.instances)]
            config = build_config({"agent": {"model": model}})
            started = time.perf_counter()
            state = BatchRun(config, instances, Path(tmp) / "out", num_workers=args.workers).run(progress=False)
            seconds = time.perf_counter() - started
        steps = server.requests() - 1  # less the warm-up call
    assert state.counts() == {"submitted": args.instances}, state.counts()
    achieved, ideal = steps / seconds, args.workers / args.latency
    print(f"{steps} steps in {seconds:.1f} s with {args.workers} workers, latency {args.latency}s")
    print(f"ideal {ideal:.1f} steps/s (W/L), achieved {achieved:.1f} steps/s: ratio {achieved / ideal:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
