"""Typer command of the viewer (`view`): argument handling only."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def view_command(
    trajectories: Path = typer.Argument(..., help="A trajectory folder (or one .traj file): ours or SWE-agent's."),
    report: Optional[Path] = typer.Option(None, "--report", help="Eval run folder or its aggregate report.json (adds resolved and test results)."),
    sft: Optional[Path] = typer.Option(None, "--sft", help="convert's output folder or train.jsonl (marks the trained turns)."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Folder for view.html (default: the trajectory folder)."),
    serve: bool = typer.Option(False, "--serve", help="Also serve the page on 127.0.0.1 until Ctrl-C."),
    port: int = typer.Option(8765, "--port", help="Port for --serve."),
) -> None:
    """Write one self-contained HTML page: the batch table and every conversation, switch marked."""
    from sweagent_oec.files import atomic_write_text
    from sweagent_oec.view.collect import collect
    from sweagent_oec.view.page import render_html

    data = collect(trajectories, report, sft)
    folder = output_dir or (trajectories.parent if trajectories.is_file() else trajectories)
    if folder.exists() and not folder.is_dir():
        from sweagent_oec.errors import UserError

        raise UserError(f"--output-dir {folder}: is a file, not a folder")
    out = folder / "view.html"
    atomic_write_text(out, render_html(data))
    typer.echo(f"wrote {out} ({len(data['instances'])} trajectories"
               + (f", {len(data['unreadable'])} unreadable" if data["unreadable"] else "") + ")")
    if serve:
        from sweagent_oec.view.serve import serve_file

        serve_file(out, port)
