"""Resume across settings: an error from another runtime or config is not finished work; a graded
report stands unless what grades it changed (harness, runtime, grading, image)."""

from __future__ import annotations

import json

from sweagent_oec.env.runtime import EnvConfig
from sweagent_oec.harness.evaluate import EvalOptions, evaluate
from sweagent_oec.harness.predictions import Prediction
from sweagent_oec.harness.resume import SETTINGS_NAME, finished_report
from sweagent_oec.tasks.bundled import materialize_tinycalc

FIX = """diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -9,7 +9,7 @@
 def mean(values):
     if not values:
         raise ValueError("mean of an empty list")
-    return sum(values) / (len(values) + 1)
+    return sum(values) / len(values)
 
 
 def clamp(x, low, high):
"""


def _run(instance, tmp_path, **kw):
    preds = {instance.instance_id: Prediction(instance_id=instance.instance_id, model_name_or_path="m", model_patch=FIX)}
    return evaluate([instance], preds, EvalOptions(run_id="r", output_dir=tmp_path / "eval", progress=False, **kw))


def test_error_from_another_runtime_is_redone_graded_report_stands(tmp_path):
    instance = materialize_tinycalc(tmp_path)
    out = tmp_path / "eval" / "r" / instance.instance_id
    # A first try on the wrong runtime: no engine answers there.
    first = _run(instance, tmp_path, runtime="docker", env=EnvConfig(type="docker", docker_host="unix:///nonexistent/oec.sock"))
    assert first["error"] == 1 and first["errors"][instance.instance_id].startswith("environment_error")
    assert json.loads((out / SETTINGS_NAME).read_text())["runtime"] == "docker"
    # The same settings again: that error is this configuration's finished work, kept.
    again = _run(instance, tmp_path, runtime="docker", env=EnvConfig(type="docker", docker_host="unix:///nonexistent/oec.sock"))
    assert again["error"] == 1
    # The right runtime: the error is not taken as done; the instance is evaluated and resolves.
    second = _run(instance, tmp_path, runtime="local")
    assert second["resolved"] == 1 and second["error"] == 0
    report_time = (out / "report.json").stat().st_mtime_ns
    # Same settings, or only a longer timeout: the graded report stands.
    assert _run(instance, tmp_path, runtime="local")["resolved"] == 1
    assert _run(instance, tmp_path, runtime="local", timeout=99)["resolved"] == 1
    assert (out / "report.json").stat().st_mtime_ns == report_time
    # Another grading policy: graded again.
    assert _run(instance, tmp_path, runtime="local", policy="swesmith")["resolved"] == 1
    assert (out / "report.json").stat().st_mtime_ns != report_time
    assert json.loads((out / SETTINGS_NAME).read_text())["grading"] == "swesmith"


def test_reports_without_settings(tmp_path):
    """Reports from runs that recorded no settings: graded ones stand, errors are redone."""
    folder = tmp_path / "x"
    folder.mkdir()
    settings = {"harness": "swesmith", "runtime": "local", "grading": "strict", "image": None, "timeout": 1800}
    (folder / "report.json").write_text(json.dumps({"resolved": True, "patch_exists": True}))
    assert finished_report(folder, settings) == {"resolved": True, "patch_exists": True}
    (folder / "report.json").write_text(json.dumps({"resolved": False, "error": "timeout: ran past 60 s"}))
    assert finished_report(folder, settings) is None
    (folder / SETTINGS_NAME).write_text(json.dumps({**settings, "timeout": 60}))
    assert finished_report(folder, settings) is None  # a timeout under a shorter limit is not this run's
    (folder / SETTINGS_NAME).write_text(json.dumps(settings))
    assert finished_report(folder, settings)["error"].startswith("timeout")
    (folder / SETTINGS_NAME).write_text("not json")
    assert finished_report(folder, settings) is None
