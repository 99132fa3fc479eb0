"""Typer commands of the environments (`images pull`): argument handling only."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

images_app = typer.Typer(help="Docker images of task instances.", no_args_is_help=True)


@images_app.command("pull")
def pull_command(
    instances: str = typer.Option(..., "--instances", "-i", help="Instances: JSON/JSONL file, datasets folder, HF dataset name."),
    config: Optional[list[Path]] = typer.Option(None, "--config", "-c", help="Run config(s): env.image_name and env.docker_host apply."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of a hub dataset or datasets folder."),
    slice_: Optional[str] = typer.Option(None, "--slice", help="Python slice of the instance list, e.g. 0:100."),
    filter_: Optional[str] = typer.Option(None, "--filter", help="Regex on instance ids."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Pull every image the instances need (kept where the engine has one), with progress and retries."""
    from sweagent_oec.env.docker import connect
    from sweagent_oec.env.images import pull_images
    from sweagent_oec.env.runtime import EnvConfig
    from sweagent_oec.tasks.instances import load_instances, select_instances

    env = EnvConfig(type="docker")
    if config:
        from sweagent_oec.config import load_config

        env = load_config(config, []).env
    chosen = select_instances(load_instances(instances, split), slice_, filter_, False, 0)
    client = connect(env.docker_host)
    report = pull_images(client, chosen, env, progress=progress)
    typer.echo(f"{len(chosen)} instances: {len(report.present)} images present, {len(report.pulled)} pulled, "
               f"{len(report.failed)} failed ({report.seconds:.0f}s)")
    for name, reason in sorted(report.failed.items()):
        typer.echo(f"  failed: {name}: {reason}")
    if report.failed:
        raise typer.Exit(1)
