"""The `categorize` stage end to end: check every input, run each labelled run, write the outputs.

Output folder layout:
    <out>/<label>/results.jsonl, results.csv, summary.json   one per run
    <out>/summary.json                                        {"mode", "runs": {label: summary}}
    <out>/categories.csv, categories.png                      side by side (rubric.* for --submitted)
    <out>/cache/<key>.json                                    judge answers, for resume
Nothing is created until all inputs have been checked; every file is written whole (atomic).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from failure_categorization.inputs import RunSpec, check_label, load_report
from failure_categorization.judge import check_api_key
from failure_categorization.plots import plot_categories, plot_rubric
from failure_categorization.run import Categorizer, Settings, select
from failure_categorization.summary import comparison_csv, summarize, write_run
from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text

log = logging.getLogger(__name__)


def _check_specs(specs: list[RunSpec]) -> None:
    if not specs:
        raise UserError("nothing to categorize: give a trajectory folder, or --run LABEL=TRAJ_DIR[:REPORT]")
    labels = [check_label(s.label) for s in specs]
    if len(set(labels)) != len(labels):
        raise UserError(f"run labels must differ; got {labels}")
    if "cache" in labels:
        raise UserError("'cache' is reserved for the answer cache; pick another run label")
    for spec in specs:
        if not spec.traj_dir.is_dir():
            raise UserError(f"run {spec.label}: trajectory folder {spec.traj_dir} not found")


def categorize(specs: list[RunSpec], settings: Settings, output_dir: Path, show_progress: bool = True) -> dict[str, dict]:
    _check_specs(specs)
    if settings.judge is not None:
        check_api_key(settings.judge)
    reports = {s.label: load_report(s.report) if s.report else None for s in specs}
    selections = {s.label: select(s, reports[s.label], settings) for s in specs}
    for spec in specs:
        if selections[spec.label].missing:
            log.warning("run %s: %d instance(s) in the report have no trajectory in %s", spec.label,
                        len(selections[spec.label].missing), spec.traj_dir)
    if settings.judge is None:
        log.warning("pre-rules only: no judge is asked; trajectories no rule matches are recorded as not_judged")

    categorizer = Categorizer(settings, output_dir / "cache")
    results = {}
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not show_progress) as progress:
        for spec in specs:
            results[spec.label] = categorizer.run(spec, reports[spec.label], selections[spec.label], progress)

    summaries = {}
    for spec in specs:
        records = results[spec.label]
        summaries[spec.label] = summarize(
            spec.label, settings.mode, records, settings.taxonomy,
            judge_model=settings.judge.model if settings.judge else None,
            missing=selections[spec.label].missing,
            cost_this_run=sum(r.cost for r in records if not r.cached),
            unpriced=categorizer.budget.unpriced,
            protocol=settings.protocol,
            selection=selection_text(settings, spec.report is not None),
        )
        write_run(output_dir / spec.label, records, summaries[spec.label], settings.taxonomy)
    write_comparison(output_dir, summaries)
    return summaries


def selection_text(settings: Settings, has_report: bool) -> str:
    """What was included, in words (summaries and plot titles say it)."""
    if settings.mode == "submitted":
        return "runs that submitted a patch"
    if settings.select_all:
        return "all trajectories" + (", resolved ones included" if has_report else "")
    return "unresolved and error runs of the report"


def write_comparison(output_dir: Path, summaries: dict[str, dict]) -> None:
    mode = next(iter(summaries.values()))["mode"]
    stem = "rubric" if mode == "submitted" else "categories"
    atomic_write_text(output_dir / "summary.json", json.dumps({"mode": mode, "runs": summaries}, indent=1))
    atomic_write_text(output_dir / f"{stem}.csv", comparison_csv(summaries))
    if any(s["total"] for s in summaries.values()):
        (plot_rubric if mode == "submitted" else plot_categories)(summaries, output_dir / f"{stem}.png")
    else:
        log.warning("no trajectory was categorized: no plot drawn")


def compare(folders: list[tuple[str | None, Path]], output_dir: Path) -> dict[str, dict]:
    """Plots and tables over existing per-run outputs (`<out>/<label>` folders), no judging."""
    if not folders:
        raise UserError("compare: give at least one run folder (--compare [LABEL=]DIR)")
    summaries: dict[str, dict] = {}
    for label, folder in folders:
        path = folder / "summary.json"
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            raise UserError(f"compare: {path} missing or unreadable; point --compare at a per-run output folder (<out>/<label>)")
        if "by_category" not in summary or "mode" not in summary:
            raise UserError(f"compare: {path} is not a per-run summary; use <out>/<label>, not <out>")
        label = check_label(label or summary.get("label") or folder.name)
        if label in summaries:
            raise UserError(f"compare: label {label!r} given twice; name them LABEL=DIR")
        summaries[label] = summary
    modes = {s["mode"] for s in summaries.values()}
    if len(modes) > 1:
        raise UserError(f"compare: cannot mix modes {sorted(modes)} (failure categories vs rubric scores)")
    write_comparison(output_dir, summaries)
    return summaries
