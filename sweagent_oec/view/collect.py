"""Gather what the viewer shows from the files other stages wrote: trajectories (ours or
SWE-agent's), an optional eval report folder and optional SFT records. Reads files only.

Everything here is data written by an agent or a model, so it is treated as hostile text: it is
only ever put into the page as JSON and shown through `textContent`, never as markup.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweagent_oec.data.trajectory import (
    EXPERT,
    STUDENT,
    Trajectory,
    TrajectoryFormatError,
    find_trajectories,
    load_trajectory,
)
from sweagent_oec.errors import UserError

#: Longer observations are cut in the page (the .traj keeps them whole) so a batch stays loadable.
MAX_OBSERVATION_CHARS = 20_000
MAX_PROMPT_CHARS = 20_000


def _cut(text: Any, limit: int) -> str:
    text = text if isinstance(text, str) else json.dumps(text)
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters in the .traj]"


def _flat(content: Any) -> str:
    """History content may be a list of text blocks (SWE-agent, cache_control marks)."""
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) if isinstance(b, dict) else str(b) for b in content)
    return "" if content is None else str(content)


def _prompt(traj: Trajectory) -> list[dict]:
    """The messages before the first action (system prompt, task, demonstrations)."""
    out = []
    for item in traj.history:
        if item.role == "assistant":
            break
        out.append({"role": item.role, "text": _cut(_flat(item.content), MAX_PROMPT_CHARS)})
    return out


def _cost(stats: Any) -> float:
    return float(getattr(stats, "instance_cost", 0.0) or 0.0)


def load_reports(report: Path | None) -> dict[str, dict]:
    """Per-instance eval reports by id: from an aggregate report.json (its folder holds
    `<id>/report.json`), or from the run folder itself."""
    if report is None:
        return {}
    folder = report.parent if report.is_file() else report
    if not folder.is_dir():
        raise UserError(f"--report {report}: no such eval report or run folder")
    aggregate: dict = {}
    if (folder / "report.json").is_file():
        try:
            aggregate = json.loads((folder / "report.json").read_text())
        except ValueError:
            raise UserError(f"--report {folder / 'report.json'}: not valid JSON") from None
    reports: dict[str, dict] = {}
    for path in sorted(folder.glob("*/report.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(data, dict):
            reports[path.parent.name] = data
    # Ids that the aggregate lists but whose folder is gone still show their outcome.
    for key, verdict in (("ids_resolved", True), ("ids_unresolved", False)):
        for iid in aggregate.get(key, []) if isinstance(aggregate, dict) else []:
            reports.setdefault(iid, {"resolved": verdict})
    if isinstance(aggregate, dict):
        for iid, reason in (aggregate.get("errors") or {}).items():
            reports.setdefault(iid, {"resolved": False, "error": reason})
    return reports


def load_sft(sft: Path | None) -> dict[str, list[bool]]:
    """Per trajectory (by traj_path, else instance id): which assistant turns train."""
    if sft is None:
        return {}
    path = sft / "train.jsonl" if sft.is_dir() else sft
    if not path.is_file():
        raise UserError(f"--sft {sft}: no train.jsonl there")
    out: dict[str, list[bool]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserError(f"--sft {path}: line {lineno} is not JSON") from None
        flags = [bool(m.get("train")) for m in record.get("messages", []) if m.get("role") == "assistant"]
        for key in (record.get("traj_path"), record.get("instance_id")):
            if key:
                out.setdefault(str(key), flags)
    return out


def _trained(sft: dict[str, list[bool]], path: Path, instance_id: str) -> list[bool] | None:
    for key in (str(path), str(path.resolve()), instance_id):
        if key in sft:
            return sft[key]
    return None


def instance_view(path: Path, traj: Trajectory, report: dict | None, trained: list[bool] | None) -> dict:
    info = traj.info
    oec = info.oec
    steps = []
    for i, step in enumerate(traj.trajectory):
        extra = step.extra_info or {}
        steps.append({
            "role": step.model_role or "agent",
            "model": step.model_name or "",
            "thought": _cut(step.thought, MAX_OBSERVATION_CHARS),
            "action": _cut(step.action, MAX_OBSERVATION_CHARS),
            "observation": _cut(step.observation, MAX_OBSERVATION_CHARS),
            "observation_chars": len(step.observation or ""),
            "seconds": round(float(step.execution_time or 0.0), 3),
            "format_errors": [
                {"error": _cut(e.get("error", ""), 2000), "response": _cut(e.get("response") or "", 4000)}
                for e in extra.get("format_errors", []) if isinstance(e, dict)
            ],
            "trained": None if trained is None or i >= len(trained) else trained[i],
        })
    roles = traj.roles()
    per_role = {role: _cost(s) for role, s in (oec.model_stats.items() if oec else [])}
    resolved = None
    if report is not None:
        resolved = "error" if report.get("error") else bool(report.get("resolved"))
    switch = oec.switch_step if oec else None
    return {
        "id": path.stem,
        "path": str(path),
        "exit_status": info.exit_status or "unfinished",
        "resolved": resolved,
        "eval_error": (report or {}).get("error"),
        "tests_status": (report or {}).get("tests_status"),
        "switch_step": switch,
        "switched": bool(oec and oec.switched),
        "student_model": oec.student_model if oec else None,
        "expert_model": oec.expert_model if oec else None,
        "student_steps": sum(r == STUDENT for r in roles),
        "expert_steps": sum(r == EXPERT for r in roles),
        "steps_total": len(steps),
        "format_errors": sum(len(s["format_errors"]) for s in steps),
        "cost": round(_cost(info.model_stats), 6),
        "cost_by_role": per_role,
        "trained_turns": None if trained is None else sum(trained),
        "submission": _cut(info.submission or "", 200_000),
        "prompt": _prompt(traj),
        "steps": steps,
    }


def collect(folder: Path, report: Path | None = None, sft: Path | None = None) -> dict:
    """The page's data: one entry per readable trajectory, plus what could not be read."""
    if not folder.exists():
        raise UserError(f"{folder}: no such folder or file")
    paths = [folder] if folder.is_file() else find_trajectories(folder)
    if not paths:
        raise UserError(f"{folder}: no .traj files found")
    reports, trained = load_reports(report), load_sft(sft)
    instances, unreadable = [], []
    for path in paths:
        try:
            traj = load_trajectory(path)
        except TrajectoryFormatError as e:
            unreadable.append(str(e))
            continue
        iid = path.stem
        instances.append(instance_view(path, traj, reports.get(iid), _trained(trained, path, iid)))
    if not instances:
        raise UserError(f"{folder}: none of the {len(paths)} .traj files could be read ({unreadable[0]})")
    return {"source": str(folder), "report": str(report or ""), "sft": str(sft or ""),
            "instances": instances, "unreadable": unreadable}
