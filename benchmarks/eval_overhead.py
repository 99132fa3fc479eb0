"""What the evaluation harness costs on top of the tests it runs (not part of the test suite).

On N tinycalc-like instances, each with the correct fix as its prediction, in the same run:
  direct   the same test command run with subprocess in checkouts prepared beforehand (task state +
           fix applied), one after another: the floor any harness pays;
  eval x1  `evaluate` with 1 worker: fresh runtime, reset, apply, restore tests, run, grade, write;
  eval x2  the same with 2 workers.
Prints eval x1 / direct (target <= 1.3x) and the speedup from 1 to 2 workers.

    .venv/bin/python benchmarks/eval_overhead.py [--n 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from sweagent_oec.env.local import SYSTEM_PATH
from sweagent_oec.harness.evaluate import EvalOptions, evaluate
from sweagent_oec.harness.predictions import Prediction
from sweagent_oec.tasks.bundled import materialize_tinycalc
from sweagent_oec.tasks.instances import Instance


def _git(repo: Path, *args: str, input: str | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    return subprocess.run(["git", *args], cwd=repo, env=env, input=input, check=True, capture_output=True, text=True).stdout


def fix_patch(task: Instance, work: Path) -> str:
    repo = work / "fixwork"
    _git(work, "clone", "-q", task.local.repo_dir, str(repo))
    _git(repo, "apply", input=task.patch)
    _git(repo, "commit", "-qam", "bug")
    calc = repo / "calc.py"
    calc.write_text(calc.read_text().replace("(len(values) + 1)", "len(values)"))
    return _git(repo, "diff")


def prepared_checkout(task: Instance, patch: str, dest: Path) -> Path:
    _git(dest.parent, "clone", "-q", task.local.repo_dir, str(dest))
    _git(dest, "apply", input=task.patch)
    _git(dest, "apply", input=patch)
    return dest


def run_direct(checkouts: list[Path], task: Instance) -> float:
    # The environment the runtime gives the tests: system PATH (+ venv), the task's variables.
    env = {"PATH": (f"{task.local.venv}/bin:" if task.local.venv else "") + SYSTEM_PATH, "HOME": str(checkouts[0].parent),
           "LANG": "C.UTF-8", **task.local.env}
    start = time.perf_counter()
    for repo in checkouts:
        done = subprocess.run(["bash", "-c", task.local.test_cmd], cwd=repo, env=env, capture_output=True, text=True)
        assert "5 passed" in done.stdout, done.stdout[-500:]
    return time.perf_counter() - start


def run_eval(instances: list[Instance], preds: dict[str, Prediction], out: Path, run_id: str, workers: int) -> float:
    start = time.perf_counter()
    agg = evaluate(instances, preds, EvalOptions(run_id=run_id, output_dir=out, workers=workers, progress=False))
    elapsed = time.perf_counter() - start
    assert agg["resolved"] == len(instances), agg
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="instances per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each; the best is kept")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="oec-bench-eval-"))
    try:
        task = materialize_tinycalc(work)
        patch = fix_patch(task, work)
        instances = [task.model_copy(update={"instance_id": f"{task.instance_id}.b{i}"}) for i in range(args.n)]
        preds = {i.instance_id: Prediction(instance_id=i.instance_id, model_name_or_path="bench", model_patch=patch) for i in instances}
        checkouts = [prepared_checkout(task, patch, work / f"direct{i}") for i in range(args.n)]

        run_direct(checkouts[:1], task)  # warm the page cache and Python's bytecode caches
        run_eval(instances[:1], {instances[0].instance_id: preds[instances[0].instance_id]}, work / "logs", "warmup", 1)
        direct, eval1, eval2 = [], [], []
        for r in range(args.repeats):  # interleaved, so load on the machine hits all three alike
            direct.append(run_direct(checkouts, task))
            eval1.append(run_eval(instances, preds, work / "logs", f"w1_{r}", 1))
            eval2.append(run_eval(instances, preds, work / "logs", f"w2_{r}", 2))
        d, e1, e2 = min(direct), min(eval1), min(eval2)
        env = EvalOptions(run_id="x").env_config()
        print(f"instances: {args.n}, best of {args.repeats}, {os.cpu_count()} CPUs; runtime {env.type}, sandbox "
              f"{env.sandbox}, max_processes {env.max_processes}, memory_limit {env.memory_limit}")
        print(f"direct tests      {d:7.2f} s  ({d / args.n:.2f} s/instance)")
        print(f"eval, 1 worker    {e1:7.2f} s  ({e1 / args.n:.2f} s/instance)")
        print(f"eval, 2 workers   {e2:7.2f} s")
        print(f"overhead ratio eval x1 / direct: {e1 / d:.2f}x (target <= 1.3x)")
        print(f"speedup 1 -> 2 workers: {e1 / e2:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
