"""`sweagent-oec convert`: argument handling only; the stage is sweagent_oec.data.convert."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from sweagent_oec import options
from sweagent_oec.errors import UserError


def _source(text: str, default_weight: float = 1.0):
    """NAME=DIR or NAME=DIR:REPORT (the last ':' separates the report)."""
    from sweagent_oec.data.convert import Source

    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise UserError(f"--source {text!r} must look like NAME=DIR or NAME=DIR:REPORT")
    folder, colon, report = rest.rpartition(":") if ":" in rest else (rest, "", "")
    return Source(name.strip(), [Path(folder)], Path(report) if colon and report else None, default_weight)


def _weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for text in items:
        name, sep, value = text.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or weight < 0:
            raise UserError(f"--weight {text!r} must look like NAME=W with W a number >= 0")
        weights[name.strip()] = weight
    return weights


def convert_command(
    trajectories: Optional[list[Path]] = typer.Argument(None, help=".traj files or folders of them (one source named 'main')."),
    output: Optional[Path] = options.output_dir(help="Folder for train.jsonl, dataset/, stats.json, dropped.jsonl (required)."),
    old_output: Optional[Path] = options.old_spelling("--output"),
    report: Optional[Path] = typer.Option(None, "--report", help="Evaluation report of the positional trajectories: aggregate report.json or a folder of <id>/report.json."),
    source: list[str] = typer.Option([], "--source", help="Another source: NAME=DIR[:REPORT]. Repeat to mix sources."),
    weight: list[str] = typer.Option([], "--weight", help="NAME=W: sampling weight of a source (default 1; 0.5 keeps about half, 2 duplicates)."),
    resolved_only: bool = typer.Option(True, "--resolved-only/--keep-unresolved", help="Keep only trajectories the report marks resolved."),
    switch_step: Optional[int] = typer.Option(None, "--switch-step", min=0, help="Switch step for files without role fields (a <traj>.oec.json sidecar wins); none: all expert (BC)."),
    student_config: Optional[Path] = typer.Option(None, "--student-config", help="Run config YAML: rewrite the system prompt and actions into the student's inference format."),
    instances: Optional[str] = typer.Option(None, "--instances", "-i", help="With --student-config: instances (file, datasets folder, HF name or 'embedded') whose problem statements re-render the task message."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of --instances (hub dataset or datasets folder; default: test for SWE-bench, else train)."),
    style: Optional[Literal["xml", "tool", "ticks", "xml_function_calling", "function_calling", "thought_action", "none"]] = typer.Option(
        None, "--style", help="Action style of the output (default: the student config's parse function; none: as written)."),
    truncate_loops: bool = typer.Option(False, "--truncate-loops", help="Cut looping trajectories where the loop starts instead of dropping them."),
    max_consecutive: int = typer.Option(3, "--max-consecutive", min=0, help="Loop: the same action this many times in a row (0: off)."),
    cycle_repeats: int = typer.Option(3, "--cycle-repeats", min=0, help="Loop: a 2-3 action cycle repeated this many times in a row (0: off)."),
    max_total: int = typer.Option(10, "--max-total", min=0, help="Loop: one action more than this many times in all (0: off)."),
    max_per_instance: Optional[int] = typer.Option(None, "--max-per-instance", min=1, help="At most this many records per instance id."),
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="Keep identical trajectories (same messages) once."),
    seed: int = options.seed(help="Seed for weights, the per-instance cap and the shuffle."),
    heldout: Optional[Path] = typer.Option(None, "--heldout", help="File of held-out instance ids (one a line): written to the heldout split."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Local tokenizer folder: count trained and masked tokens in stats.json."),
    dataset: bool = typer.Option(True, "--dataset/--no-dataset", help="Also write the datasets folder (dataset/) beside train.jsonl."),
    workers: int = typer.Option(1, "--workers", "-w", min=0, help="Processes that read and convert trajectories (0: one per CPU, at most 4); worth it on many cores. The output does not depend on it."),
) -> None:
    """Turn trajectories and their evaluation report into SFT data (expert turns trained, student turns masked)."""
    from sweagent_oec.data.convert import Options, Source, convert
    from sweagent_oec.data.filters import RepetitionRules

    output = options.deprecated(old_output, "--output", "-o/--output-dir", output)
    if output is None:
        raise UserError("give the output folder with -o/--output-dir")
    weights = _weights(weight)
    sources = [Source("main", list(trajectories), report)] if trajectories else []
    if report and not trajectories:
        raise UserError("--report is for the positional trajectories; with --source give NAME=DIR:REPORT")
    sources += [_source(s) for s in source]
    if not sources:
        raise UserError("no trajectories given; pass .traj files/folders or --source NAME=DIR:REPORT")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise UserError(f"source names must differ; got {names}")
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise UserError(f"--weight names unknown source(s) {unknown}; sources are {names}")
    for s in sources:
        s.weight = weights.get(s.name, 1.0)
    run = Options(sources=sources, output=output, resolved_only=resolved_only, switch_step=switch_step,
                  student_config=student_config, instances=instances, split=split, style=style, rules=RepetitionRules(max_consecutive, cycle_repeats, max_total),
                  truncate_loops=truncate_loops, max_per_instance=max_per_instance, dedup=dedup, seed=seed,
                  heldout=heldout, tokenizer=tokenizer, dataset=dataset, workers=workers)
    stats = convert(run)
    _say(f"convert: {', '.join(f'{k} {v}' for k, v in stats['counts'].items() if v)}")
    if stats["loops_by_rule"]:
        _say(f"loops by rule: {stats['loops_by_rule']}")
    for d in _dropped(output):
        if d["reason"] == "bad_file":
            _say(f"{typer.style('skipped', fg='yellow')} {d['error']}")
    folder = f"{output}/dataset, " if dataset else ""
    _say(f"turns trained {stats['turns']['trained']}, masked assistant turns {stats['turns']['masked_assistant']}; "
        f"wrote {output}/train.jsonl, {folder}{output}/stats.json, {output}/dropped.jsonl")


def _say(text: str) -> None:
    """One line on stderr (plain: importing rich would cost the command more than its summary)."""
    typer.echo(text, err=True)


def _dropped(output: Path):
    import json

    path = output / "dropped.jsonl"
    if path.exists():
        with open(path) as f:
            for line in f:
                yield json.loads(line)
