"""`sweagent-oec tasks ...`: synthesize tasks from a real project; build or list the embedded set.

Argument handling only; the work is in synth.py and embedded.py (imported inside the commands so
that `sweagent-oec --help` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sweagent_oec import options

tasks_app = typer.Typer(help="Task instances: synthesize bugs on a real project; the embedded task set.", no_args_is_help=True)


@tasks_app.command()
def synth(
    source: str = typer.Argument(..., help="A project folder, a git repository, or a PyPI pin such as tinydb==4.8.2."),
    out: Optional[Path] = options.output_dir(help="Work folder: repo, venv, caches and instances.jsonl (reused to resume; required)."),
    old_out: Optional[Path] = options.old_spelling("--out"),
    export: Optional[Path] = typer.Option(None, "--export", help="Also write the instances JSONL to this file."),
    old_output: Optional[Path] = options.old_spelling("--output"),
    repo_name: Optional[str] = typer.Option(None, help="owner/name for the instance ids (default: pypi/<name> or local/<folder>)."),
    max_candidates: int = typer.Option(50, help="Mutations to try (seeded order over functions x kinds)."),
    max_instances: Optional[int] = typer.Option(None, help="Stop after this many kept instances."),
    max_fail_to_pass: Optional[int] = typer.Option(None, help="Drop bugs that fail more tests than this."),
    workers: int = options.workers(2, help="Candidates tested in parallel."),
    timeout: float = typer.Option(120.0, help="Seconds for one run of the test suite."),
    seed: int = options.seed(help="Seed for the choice and order of mutations."),
    kinds: Optional[str] = typer.Option(None, help="Comma-separated mutation kinds (default: all)."),
    deps: Optional[str] = typer.Option(None, help="Extra test requirements, space-separated (pytest and pyproject's test extras are added)."),
    test_path: Optional[str] = typer.Option(None, help="Tests to run, relative to the project root (default: tests/ or test/)."),
    sha256: Optional[str] = typer.Option(None, help="Expected sha256 of the downloaded sdist."),
    model: Optional[str] = typer.Option(None, help="litellm model that writes the problem statements (default: a template)."),
    api_base: Optional[str] = typer.Option(None, help="API base URL for --model."),
) -> None:
    """Make bug instances from a real Python project, validated by its own tests."""
    from rich import print as rprint

    from sweagent_oec.errors import UserError
    from sweagent_oec.tasks.instances import write_instances_jsonl
    from sweagent_oec.tasks.mutations import KINDS
    from sweagent_oec.tasks.synth import SynthConfig, synthesize

    out = options.deprecated(old_out, "--out", "-o/--output-dir", out)
    export = options.deprecated(old_output, "--output", "--export", export)
    if out is None:
        raise UserError("give the work folder with -o/--output-dir")
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip()) if kinds else KINDS
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown or not chosen:
        raise UserError(f"unknown --kinds {', '.join(unknown) or '(none)'}; choose from {', '.join(KINDS)}.")
    if max_instances is not None and max_instances < 1:
        raise UserError("--max-instances must be >= 1.")
    config = SynthConfig(
        max_candidates=max_candidates, max_instances=max_instances, workers=workers, timeout=timeout, seed=seed, kinds=chosen,
        max_fail_to_pass=max_fail_to_pass, deps=tuple(deps.split()) if deps else (), test_path=test_path, repo_name=repo_name,
        sha256=sha256, model=model, api_base=api_base,
    )
    instances = synthesize(source, out, config)
    if export:
        write_instances_jsonl(export, instances)
    rprint(f"{len(instances)} instances -> {export or out.expanduser().resolve() / 'instances.jsonl'}")


@tasks_app.command()
def embedded(
    cache_dir: Optional[Path] = typer.Option(None, help="Cache folder (default: $OEC_CACHE_DIR/embedded or ~/.cache/sweagent-oec/embedded)."),
    n: Optional[int] = typer.Option(None, "-n", help="List only the first n instances."),
    workers: int = options.workers(2, help="Parallel test runs while revalidating."),
    revalidate: bool = typer.Option(False, "--revalidate", help="Rebuild the set from the pinned sdists (every test run) and say what differs from the shipped data."),
    ids: Optional[str] = typer.Option(None, "--ids", help="With --revalidate: only these instances (comma-separated), their test lists recomputed."),
    update_shipped: bool = typer.Option(False, "--update-shipped", help="With --revalidate: write the rebuilt set as the package's shipped data (maintainers)."),
) -> None:
    """Materialize the shipped, pre-validated task set on first use (repos and venvs, no test runs), then list it."""
    from rich.console import Console
    from rich.table import Table

    from sweagent_oec.errors import UserError
    from sweagent_oec.tasks.embedded import default_cache_dir, embedded_instances, embedded_instances_path
    from sweagent_oec.tasks.embedded import revalidate as revalidate_set

    console = Console()
    if (ids or update_shipped) and not revalidate:
        raise UserError("--ids and --update-shipped go with --revalidate.")
    if revalidate:
        cache = cache_dir.expanduser().resolve() if cache_dir else default_cache_dir()
        work = cache.parent / f"{cache.name}-revalidate"
        chosen = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
        differences = revalidate_set(work, chosen, workers, update_shipped)
        for line in differences:
            console.print(line, markup=False, highlight=False)
        what = f"{len(chosen)} instances" if chosen else "the whole set"
        if update_shipped:
            console.print(f"shipped data rewritten from a rebuild in {work} ({len(differences)} differences from before)")
            return
        if differences:
            raise UserError(f"revalidation of {what} found {len(differences)} differences from the shipped data (above); rebuilt in {work}.")
        console.print(f"revalidated {what}: the shipped data holds (rebuilt in {work})")
        return
    instances = embedded_instances(cache_dir, n, workers)
    table = Table("FAIL_TO_PASS", "PASS_TO_PASS")
    table.add_column("instance_id", overflow="fold")
    for instance in instances:
        table.add_row(str(len(instance.FAIL_TO_PASS)), str(len(instance.PASS_TO_PASS)), instance.instance_id)
    console.print(table)
    console.print(f"{len(instances)} instances in {embedded_instances_path(cache_dir, workers)}")
