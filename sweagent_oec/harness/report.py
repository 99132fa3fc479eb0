"""Evaluation reports: the per-instance `report.json` and the run's aggregate `report.json`.

Per instance (SWE-smith's keys, in its order; see DESIGN section 4):
  patch_is_None, patch_exists, patch_successfully_applied, resolved,
  tests_status (when the tests ran to the end), model_name_or_path,
  error (only when the instance could not be graded: "<code>: <detail>", codes in ERROR_CODES),
  unresolved_reason (only when a graded run is unresolved whatever its tests say:
  "<code>: <detail>", codes in UNRESOLVED_CODES).
Aggregate: total, resolved, unresolved, error, ids_resolved, ids_unresolved, ids_error,
errors ({id: reason}), unresolved_reasons ({id: reason}); total = resolved + unresolved + error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweagent_oec.files import atomic_write_text

#: Why an instance could not be graded; the first word of its report's `error`.
ERROR_CODES = (
    "empty_patch",  # no submission, or a blank one: nothing to evaluate
    "patch_apply_failed",  # git apply, git apply --reject and patch --fuzz=5 all failed
    "timeout",  # the test command ran past --timeout
    "environment_error",  # the runtime could not start, or a command in it failed unexpectedly
    "unsupported_repo",  # no test command or log parser is known for the instance's repository
)

#: Why a graded instance is unresolved although its tests may read as passing.
UNRESOLVED_CODES = (
    "suspected_test_tampering",  # the patch touched the test runner or its reporting, or the channels disagree
    "incomplete_test_run",  # no session summary, an exit status that contradicts the log, no FAIL_TO_PASS test seen
)

REPORT_NAME = "report.json"


def instance_report(
    *,
    model_patch: str | None,
    model_name_or_path: str,
    applied: bool = False,
    tests_status: dict | None = None,
    resolved: bool = False,
    error: str | None = None,
    unresolved_reason: str | None = None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "patch_is_None": model_patch is None,
        "patch_exists": bool(model_patch and model_patch.strip()),
        "patch_successfully_applied": applied,
        "resolved": resolved,
    }
    if tests_status is not None:
        report["tests_status"] = tests_status
    report["model_name_or_path"] = model_name_or_path
    if error is not None:
        report["error"] = error
    if unresolved_reason is not None:
        report["unresolved_reason"] = unresolved_reason
    return report


def write_report(path: Path | str, report: dict) -> None:
    atomic_write_text(path, json.dumps(report, indent=4) + "\n")


def read_report(path: Path | str) -> dict | None:
    """A finished instance's report, or None when there is none (or it is unreadable: redo it)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "resolved" in data else None


def aggregate_report(reports: dict[str, dict]) -> dict[str, Any]:
    """The run's summary over per-instance reports (ids sorted, so reruns give the same file)."""
    ids_resolved, ids_unresolved, ids_error = [], [], []
    errors: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for iid in sorted(reports):
        report = reports[iid]
        if report.get("error"):
            ids_error.append(iid)
            errors[iid] = report["error"]
        elif report.get("resolved"):
            ids_resolved.append(iid)
        else:
            ids_unresolved.append(iid)
            if report.get("unresolved_reason"):
                reasons[iid] = report["unresolved_reason"]
    return {
        "total": len(reports),
        "resolved": len(ids_resolved),
        "unresolved": len(ids_unresolved),
        "error": len(ids_error),
        "ids_resolved": ids_resolved,
        "ids_unresolved": ids_unresolved,
        "ids_error": ids_error,
        "errors": errors,
        "unresolved_reasons": reasons,
    }
