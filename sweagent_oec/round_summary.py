"""The closing table of an OEC round: what each stage produced, read from the files it wrote.

Reads a round folder laid out by scripts/test_oec.sh (trajectories/, eval/<run>/report.json,
sft/stats.json, shift/, categorize/, timings.txt) and writes `summary.json` beside them.
Missing parts are reported as missing, never invented.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from sweagent_oec.data.trajectory import STUDENT, Trajectory, TrajectoryFormatError, find_trajectories, load_trajectory
from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def student_measures(traj: Trajectory) -> tuple[int, int, int]:
    """(student steps, student steps before the switch, malformed student replies) of one trajectory.

    Before the switch: the switch step where the expert took over, else every student step. Malformed
    replies are the re-queried ones kept on the step that followed them (the expert's own step when it
    took over on them) and those that ended the run (`info.format_errors`), the student's only."""
    steps = sum(1 for s in traj.trajectory if s.model_role == STUDENT)
    switch = traj.info.oec.switch_step if traj.info.oec else None
    errors = [(e, s.model_role) for s in traj.trajectory for e in s.extra_info.get("format_errors") or []]
    errors += [(e, None) for e in (traj.info.model_extra or {}).get("format_errors") or []]
    malformed = sum(1 for e, role in errors if isinstance(e, dict) and e.get("model_role", role) == STUDENT)
    return steps, (switch if switch is not None else steps), malformed


def summarize_round(out: Path) -> dict:
    out = Path(out)
    if not out.is_dir():
        raise UserError(f"{out} is not a folder: run scripts/test_oec.sh first")
    summary: dict = {"output_dir": str(out.resolve())}
    switch_steps, roles, statuses = [], Counter(), Counter()
    student_steps = before_switch = malformed = 0
    for path in find_trajectories(out / "trajectories"):
        try:
            traj = load_trajectory(path)
        except TrajectoryFormatError:
            statuses["unreadable"] += 1
            continue
        statuses[traj.info.exit_status or "unfinished"] += 1
        roles.update(r or "none" for r in traj.roles())
        if traj.info.oec:
            switch_steps.append(traj.info.oec.switch_step)
        steps, before, bad = student_measures(traj)
        student_steps, before_switch, malformed = student_steps + steps, before_switch + before, malformed + bad
    read = sum(statuses.values()) - statuses["unreadable"]
    summary["instances"] = sum(statuses.values())
    summary["exit_statuses"] = dict(statuses)
    summary["switch_steps"] = switch_steps
    # How far the student got on its own, and how often its replies did not parse (re-queries included).
    summary["student_steps"], summary["student_malformed_replies"] = student_steps, malformed
    summary["student_steps_before_switch"] = round(before_switch / read, 3) if read else None
    summary["student_malformed_per_step"] = round(malformed / student_steps, 4) if student_steps else None
    summary["steps_by_role"] = dict(roles)
    for run in ("oec", "expert"):
        report = _json(out / "eval" / run / "report.json")
        if report:
            total = report.get("total", 0)
            summary[f"resolved_{run}"] = f"{report.get('resolved', 0)}/{total}"
    stats = _json(out / "sft" / "stats.json")
    if stats:
        summary["sft_records"] = stats.get("records_by_kind")
        summary["sft_turns"] = stats.get("turns")  # trained = expert turns; masked = student turns
        summary["sft_dropped"] = {k: v for k, v in stats.get("counts", {}).items()
                                  if v and k in ("bad_file", "unresolved", "error", "missing_from_report", "loop",
                                                 "no_trainable_turn", "duplicates")}
    summary["checkpoint"] = str(out / "checkpoint") if (out / "checkpoint").exists() else None
    summary["plots"] = sorted(str(p) for folder in ("shift", "categorize") for p in (out / folder).rglob("*.png"))
    timings = out / "timings.txt"
    if timings.exists():
        summary["seconds_by_stage"] = {k: int(v) for k, v in (line.split() for line in timings.read_text().splitlines() if line.strip())}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="OEC round", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.items():
        if key == "plots":
            value = "\n".join(value) or "none"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        table.add_row(key, str(value))
    Console().print(table)
