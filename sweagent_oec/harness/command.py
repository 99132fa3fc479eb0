"""CLI commands of the evaluation stage: `eval` and `merge-preds` (argument handling only)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, Optional

import typer

from sweagent_oec import options


def eval_command(
    instances: str = options.instances(...),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="preds.json or JSONL (one prediction per line)."),
    run_id: str = typer.Option(..., "--run-id", help="Name of this evaluation; outputs go to <output-dir>/<run-id>/."),
    workers: int = options.workers(help="Instances evaluated in parallel, each in its own environment."),
    timeout: float = typer.Option(1800, "--timeout", min=1, help="Seconds the test command may run per instance."),
    runtime: Literal["local", "docker"] = typer.Option("local", "--runtime", help="Where tests run."),
    instance_ids: Optional[list[str]] = typer.Option(None, "--instance-ids", help="Only these ids (repeat, or comma-separated)."),
    redo_existing: bool = typer.Option(False, "--redo-existing", help="Re-evaluate instances that already have a report."),
    gold: bool = typer.Option(False, "--gold", help="Evaluate each instance's reverse bug patch instead of predictions."),
    output_dir: Path = options.output_dir(Path("logs/run_evaluation"), help="Root folder of evaluation runs: this one goes to <output-dir>/<run-id>/."),
    grading: Literal["strict", "swesmith"] = typer.Option("strict", "--grading", help="strict: missing or skipped tests fail; swesmith: SWE-smith's rule (see the harness README)."),
    harness: Literal["auto", "swesmith", "swebench"] = typer.Option("auto", "--harness", help="swesmith (ours), swebench (SWE-bench's package, its images), auto: swebench for SWE-bench instances."),
    split: Optional[str] = options.split(),
    executor: Literal["threads", "ray"] = typer.Option("threads", "--executor", help="ray: each instance a Ray task (--ray-address, else RAY_ADDRESS)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join ('auto': a running one)."),
) -> None:
    """Apply each prediction's patch in a fresh environment, run the tests, grade, and write reports."""
    from rich.console import Console

    from sweagent_oec.errors import UserError
    from sweagent_oec.harness.evaluate import EvalOptions, evaluate
    from sweagent_oec.harness.report import REPORT_NAME
    from sweagent_oec.harness.predictions import load_predictions
    from sweagent_oec.tasks.instances import check_unique_ids, get_instance, load_instances, with_branches

    if gold == (predictions is not None):
        raise UserError("give either --predictions FILE or --gold (evaluate the reverse bug patches), not both or neither")
    if not run_id.strip() or "/" in run_id:
        raise UserError(f"--run-id {run_id!r} must be a non-empty name without '/'")
    preds = None if gold else load_predictions(predictions)
    dataset = load_instances(instances, split)
    check_unique_ids([i.instance_id for i in dataset], str(instances))
    if preds is not None:
        dataset = with_branches(dataset, set(preds))  # <id>__b<s> predictions are graded against <id>'s tests
    if instance_ids:
        wanted = [iid.strip() for item in instance_ids for iid in item.split(",") if iid.strip()]
        dataset = [get_instance(dataset, iid, instances) for iid in dict.fromkeys(wanted)]
        if preds is not None:
            preds = {iid: pred for iid, pred in preds.items() if iid in set(wanted)}
    if preds is not None and not set(preds) & {i.instance_id for i in dataset}:
        # An empty or foreign predictions file: evaluating it would overwrite the run's report with nothing.
        what = "has no predictions" if not preds else f"has no prediction for any of the {len(dataset)} instances"
        raise UserError(f"{predictions} {what} (of {instances}{', --instance-ids' if instance_ids else ''}); "
                        "nothing evaluated, nothing written: check --predictions and --instances")
    run_dir = output_dir / run_id
    blocking = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise UserError(f"{run_dir} cannot be made: {blocking} is a file; give another --output-dir or --run-id")
    if runtime == "docker" and executor == "threads" and not ray_address:
        from sweagent_oec.env.docker import connect

        connect()  # no engine: one error now, not one per instance
    opts = EvalOptions(run_id=run_id, output_dir=output_dir, workers=workers, timeout=timeout, runtime=runtime,
                       redo_existing=redo_existing, gold=gold, policy=grading,  # type: ignore[arg-type]
                       executor="ray" if ray_address else executor, ray_address=ray_address)
    from sweagent_oec.harness.swebench import choose_harness, evaluate_swebench

    started = time.time()
    if choose_harness(harness, dataset, runtime) == "swebench":
        agg = evaluate_swebench(dataset, preds, opts)
    else:
        agg = evaluate(dataset, preds, opts)
    # What this call graded, told apart from reports kept from earlier runs (a report is written last).
    ran = sum(1 for report in opts.run_dir.glob(f"*/{REPORT_NAME}") if report.stat().st_mtime >= started)
    console = Console()
    console.print(f"{ran} evaluated now, {agg['total'] - ran} kept from earlier runs; in the report: "
                  f"{agg['total']}: [green]{agg['resolved']} resolved[/], {agg['unresolved']} unresolved, "
                  f"[red]{agg['error']} errors[/]; report: {opts.run_dir / 'report.json'}", highlight=False)
    for iid, reason in agg["errors"].items():
        console.print(f"  {iid}: {reason}", highlight=False, markup=False)


def merge_preds_command(
    inputs: list[Path] = typer.Argument(..., help="preds.json/JSONL files and/or trajectory folders (shards)."),
    output: Path = typer.Option(Path("preds.json"), "--output", "-o", help="Where to write the merged preds.json."),
) -> None:
    """Merge predictions from shards (preds files or .traj folders) into one preds.json."""
    from sweagent_oec.errors import UserError
    from sweagent_oec.harness.predictions import merge_predictions, write_predictions

    if output.is_dir():
        raise UserError(f"-o {output} is a folder; give a file name, e.g. -o {output / 'preds.json'}")
    merged = merge_predictions(list(inputs))
    if not merged:
        raise UserError(f"no predictions found in {', '.join(map(str, inputs))}; give preds.json files or folders of finished .traj files")
    write_predictions(output, merged)
    typer.echo(f"{len(merged)} predictions -> {output}")


def score_command(
    report: Path = typer.Argument(..., help="The aggregate report.json of an evaluation run."),
    trajectories: Optional[list[Path]] = typer.Option(None, "--trajectories", "-t", help="Run folders (shards) of the .traj files: exit statuses, and instances without a report count as unresolved."),
    total: Optional[int] = typer.Option(None, "--total", min=1, help="Instances the run was asked to solve (e.g. 500 for SWE-bench Verified), when some have neither report nor trajectory."),
    confidence: float = typer.Option(0.95, "--confidence", min=0.5, max=0.999, help="Confidence level of the interval."),
) -> None:
    """Resolve rate with a binomial (Clopper-Pearson) confidence interval, and the exit-status table."""
    from sweagent_oec.harness.score import score

    for line in score(report, trajectories, total, confidence).lines():
        typer.echo(line)
