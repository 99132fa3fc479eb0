"""Resume: which earlier per-instance reports count as finished work for this evaluation.

Beside each `report.json` the harness writes `eval_settings.json` (before the report, so a report
always has the settings it was made with): the harness, runtime, grading policy, image and
timeout. On a rerun an instance is skipped only when its report still stands:
  - an `error` report stands only under the same settings: an environment that did not start, a
    patch that did not apply or a timeout under another runtime, image or timeout says nothing
    about this one (e.g. a first try with the wrong `--runtime`);
  - a graded report stands unless the harness, runtime, grading or image differ (the timeout does
    not change a grade); one without a settings file (an older run) stands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweagent_oec.files import atomic_write_text
from sweagent_oec.harness.report import REPORT_NAME, read_report

SETTINGS_NAME = "eval_settings.json"
#: The settings that can change a graded result (the timeout only decides whether there is one).
GRADE_KEYS = ("harness", "runtime", "grading", "image")


def eval_settings(*, harness: str, runtime: str, grading: str, image: str | None, timeout: float) -> dict[str, Any]:
    return {"harness": harness, "runtime": runtime, "grading": grading, "image": image, "timeout": timeout}


def settings_of(opts, harness: str = "swesmith", image: str | None = None) -> dict[str, Any]:
    """The settings of an evaluation run (`harness.evaluate.EvalOptions`) as recorded beside its reports."""
    env = opts.env_config()
    return eval_settings(harness=harness, runtime=env.type, grading=opts.policy, image=image or env.image_name,
                         timeout=opts.timeout)


def write_settings(instance_dir: Path, settings: dict[str, Any]) -> None:
    atomic_write_text(Path(instance_dir) / SETTINGS_NAME, json.dumps(settings, indent=4) + "\n")


def _read_settings(instance_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(instance_dir) / SETTINGS_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished_report(instance_dir: Path, settings: dict[str, Any]) -> dict | None:
    """The instance's earlier report when it counts as done under `settings`, else None (redo it)."""
    report = read_report(Path(instance_dir) / REPORT_NAME)
    if report is None:
        return None
    recorded = _read_settings(instance_dir)
    if report.get("error"):
        return report if recorded == settings else None
    if recorded is not None and any(recorded.get(k) != settings.get(k) for k in GRADE_KEYS):
        return None
    return report
