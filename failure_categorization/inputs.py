"""Reading the stage's inputs: evaluation reports, the optional instances file, `--run` specs.

All checks happen here, before any output exists, and each failure is one `UserError` line.
Reports are read as plain JSON (DESIGN section 4), not through the harness's code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


from sweagent_oec.errors import UserError
from sweagent_oec.tasks.instances import Instance

REPORT_LISTS = ("ids_resolved", "ids_unresolved", "ids_error")


@dataclass
class RunSpec:
    label: str
    traj_dir: Path
    report: Path | None = None


@dataclass
class Report:
    resolved: set[str]
    unresolved: set[str]
    error: set[str]

    def outcome(self, instance_id: str) -> str | None:
        for name, ids in (("resolved", self.resolved), ("unresolved", self.unresolved), ("error", self.error)):
            if instance_id in ids:
                return name
        return None


def parse_run_spec(text: str) -> RunSpec:
    """`LABEL=TRAJ_DIR[:REPORT]`."""
    label, sep, rest = text.partition("=")
    if not sep or not label.strip() or not rest:
        raise UserError(f"--run {text!r}: expected LABEL=TRAJ_DIR[:REPORT], e.g. oec=runs/oec:runs/oec_eval/report.json")
    traj_dir, _, report = rest.partition(":")
    return RunSpec(label.strip(), Path(traj_dir), Path(report) if report else None)


def check_label(label: str) -> str:
    if not label or label in (".", "..") or any(c in label for c in "/\\:"):
        raise UserError(f"run label {label!r} cannot be a folder name; use letters, digits, '-' or '_'")
    return label


def load_report(path: Path) -> Report:
    if not path.is_file():
        raise UserError(f"evaluation report {path} not found; pass the aggregate report.json written by the eval stage")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"evaluation report {path}: not readable JSON ({e}); pass the aggregate report.json")
    if not isinstance(data, dict) or not any(k in data for k in REPORT_LISTS):
        raise UserError(f"evaluation report {path}: no ids_resolved/ids_unresolved/ids_error lists; is it a per-instance report?")
    lists = {}
    for key in REPORT_LISTS:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise UserError(f"evaluation report {path}: {key} should be a list of instance ids")
        lists[key] = {str(v) for v in value}
    return Report(lists["ids_resolved"], lists["ids_unresolved"], lists["ids_error"])


def load_instances(path: Path, split: str | None = None) -> dict[str, Instance]:
    """The task instances by id, from any source the tasks loader reads (JSON, JSONL, datasets)."""
    from sweagent_oec.tasks.instances import load_instances as load

    return {inst.instance_id: inst for inst in load(path, split)}


def repo_of(instance_id: str, instance: Instance | None) -> str:
    """The instance's repo, else read from a SWE-smith/SWE-bench id: `owner__name.abc.pr_1` -> `owner/name`."""
    if instance is not None and instance.repo:
        return instance.repo
    if "__" in instance_id:
        owner, rest = instance_id.split("__", 1)
        name = rest.split(".", 1)[0]
        return f"{owner}/{name.rsplit('-', 1)[0] if name.rsplit('-', 1)[-1].isdigit() else name}"
    return instance_id.split(".", 1)[0]
