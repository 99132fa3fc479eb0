"""Inputs that must not damage outputs (issue 13 item 5): each is refused with one line and a
non-zero exit, and every file written before is byte-identical afterwards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweagent_oec.errors import UserError
from sweagent_oec.harness.predictions import Prediction, load_predictions, merge_predictions, write_predictions
from sweagent_oec.tasks.instances import Instance, check_unique_ids, load_instances, write_instances_jsonl
from tests.agent_helpers import SOLUTION, tinycalc

CLI = [sys.executable, "-m", "sweagent_oec.cli"]
BAD_IDS = ["../escape", "a/b", "a\\b", "..", ".hidden", "new\nline", "tab\there", "nul\x00", "esc\x1b[2J", "", "x" * 300,
           "rtl\u202eexe.fdp", "line\u2028sep", "zero\u200bwidth"]


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path (so files written outside an output folder show up too)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def earlier_outputs(tmp_path: Path) -> Path:
    """A folder holding a finished run's outputs: preds.json, a trajectory, an eval report."""
    out = tmp_path / "out"
    write_predictions(out / "preds.json", {"tiny-00": Prediction(instance_id="tiny-00", model_patch="diff --git a/x b/x\n")})
    (out / "tiny-00").mkdir()
    (out / "tiny-00" / "tiny-00.traj").write_text('{"trajectory": [], "history": [], "info": {"exit_status": "submitted"}}\n')
    return out


def replay_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"agent": {"model": {"name": "replay", "replay_path": str(SOLUTION)}}}))
    return path


def instances_with(tmp_path: Path, ids: list[str]) -> Path:
    base = tinycalc(tmp_path)
    rows = [{**base.model_dump(mode="json"), "instance_id": iid} for iid in ids]
    path = tmp_path / "instances.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ---------------------------------------------------------------- instance ids


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_instance_ids_are_refused_when_loaded(tmp_path, bad):
    path = instances_with(tmp_path, ["fine-1", bad])
    with pytest.raises(UserError) as err:
        load_instances(path)
    message = str(err.value)
    assert "\n" not in message and "instances.jsonl:2" in message
    assert repr(bad)[:60] in message if bad else "no 'instance_id'" in message
    with pytest.raises(ValueError):
        Instance(instance_id=bad)


def test_ordinary_ids_pass():
    for iid in ["django__django-11099", "pypi__tinydb.3a2b1c0d.func_pm_op_swap__ab12cd34", "tiny-00", "a.b_c-d"]:
        assert Instance(instance_id=iid).instance_id == iid


@pytest.mark.parametrize("bad", ["../escape", "new\nline"])
def test_run_batch_refuses_a_bad_id_and_touches_nothing(tmp_path, bad):
    out = earlier_outputs(tmp_path)
    instances = instances_with(tmp_path, ["tiny-00", bad])
    config = replay_config(tmp_path)
    before = snapshot(tmp_path)
    line = one_line_error(cli("run-batch", "-c", config, "-i", instances, "-o", out, "--no-progress", cwd=tmp_path))
    assert repr(bad) in line
    assert snapshot(tmp_path) == before


def test_duplicate_ids_are_an_error(tmp_path):
    out = earlier_outputs(tmp_path)
    instances = instances_with(tmp_path, ["tiny-00", "tiny-01", "tiny-00"])
    config = replay_config(tmp_path)
    before = snapshot(tmp_path)
    line = one_line_error(cli("run-batch", "-c", config, "-i", instances, "-o", out, "--no-progress", cwd=tmp_path))
    assert "'tiny-00' appears more than once" in line
    assert snapshot(tmp_path) == before
    with pytest.raises(UserError, match="'a' appears more than once"):
        check_unique_ids(["a", "b", "a"])
    with pytest.raises(UserError, match="'Django__x-1' and 'django__x-1' differ only in case"):
        check_unique_ids(["django__x-1", "Django__x-1"])


def test_a_prediction_with_a_bad_id_is_refused(tmp_path):
    path = tmp_path / "preds.json"
    path.write_text(json.dumps({"../../etc/x": {"instance_id": "../../etc/x", "model_patch": ""}}))
    with pytest.raises(UserError, match=r"bad instance id '\.\./\.\./etc/x'"):
        load_predictions(path)
    traj_dir = tmp_path / "trajs" / "x"
    traj_dir.mkdir(parents=True)
    (traj_dir / "..traj").write_text('{"trajectory": [], "history": [], "info": {"exit_status": "submitted", "submission": ""}}')
    with pytest.raises(UserError, match="bad instance id '.'"):
        merge_predictions([tmp_path / "trajs"])


# ---------------------------------------------------------------- eval


def eval_setup(tmp_path: Path):
    instances = tmp_path / "instances.jsonl"
    write_instances_jsonl(instances, [tinycalc(tmp_path)])
    run_dir = tmp_path / "logs" / "run1"
    (run_dir / "tinycalc").mkdir(parents=True)
    (run_dir / "report.json").write_text(json.dumps({"total": 1, "resolved": 1, "ids_resolved": ["tinycalc"]}, indent=4))
    (run_dir / "tinycalc" / "report.json").write_text('{"resolved": true}')
    return instances, run_dir


@pytest.mark.parametrize("content", ["", "{}", "[]", '{"other-task": {"instance_id": "other-task", "model_patch": "x"}}'])
def test_eval_with_no_usable_prediction_exits_and_touches_nothing(tmp_path, content):
    instances, run_dir = eval_setup(tmp_path)
    preds = tmp_path / "preds.json"
    preds.write_text(content)
    before = snapshot(tmp_path)
    line = one_line_error(cli("eval", "--instances", instances, "--predictions", preds, "--run-id", "run1",
                              "--output-dir", tmp_path / "logs", cwd=tmp_path))
    assert "nothing evaluated" in line
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- merge-preds


def test_merge_preds_into_a_folder_or_from_a_bad_shard_keeps_the_old_file(tmp_path):
    good = tmp_path / "a.json"
    write_predictions(good, {"t1": Prediction(instance_id="t1", model_patch="p1")})
    merged = tmp_path / "merged.json"
    assert cli("merge-preds", good, "-o", merged).returncode == 0
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("kept")
    before = snapshot(tmp_path)
    assert "is a folder" in one_line_error(cli("merge-preds", good, "-o", folder))
    bad = tmp_path / "b.json"
    bad.write_text('{"t1": {"instance_id": "t1", "model_patch": "OTHER"}}')
    snap = {**before, "b.json": bad.read_bytes()}
    assert "different predictions" in one_line_error(cli("merge-preds", good, bad, "-o", merged))
    assert snapshot(tmp_path) == snap
    with pytest.raises(UserError, match="is a folder"):
        write_predictions(folder, {})


# ---------------------------------------------------------------- the former tracebacks


def test_config_path_that_is_a_folder(tmp_path):
    out = earlier_outputs(tmp_path)
    instances = instances_with(tmp_path, ["tiny-00"])
    (tmp_path / "conf.d").mkdir()
    before = snapshot(tmp_path)
    assert "conf.d" in one_line_error(cli("run-batch", "-c", tmp_path / "conf.d", "-i", instances, "-o", out, "--no-progress"))
    assert snapshot(tmp_path) == before


def test_run_batch_output_that_is_a_file(tmp_path):
    instances = instances_with(tmp_path, ["tiny-00"])
    target = tmp_path / "results.txt"
    target.write_text("earlier results\n")
    config = replay_config(tmp_path)
    before = snapshot(tmp_path)
    line = one_line_error(cli("run-batch", "-c", config, "-i", instances, "-o", target, "--no-progress"))
    assert "is a file" in line
    assert snapshot(tmp_path) == before


def test_tasks_synth_on_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    line = one_line_error(cli("tasks", "synth", tmp_path / "empty", "-o", tmp_path / "work"))
    assert "empty" in line
    assert not (tmp_path / "work").exists()
    (tmp_path / "norepo").mkdir()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path / "norepo", check=True)
    assert "without a commit" in one_line_error(cli("tasks", "synth", tmp_path / "norepo", "-o", tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_output_folders_under_a_file(tmp_path):
    instances, run_dir = eval_setup(tmp_path)
    (tmp_path / "afile").write_text("x\n")
    config = replay_config(tmp_path)
    before = snapshot(tmp_path)
    line = one_line_error(cli("eval", "--instances", instances, "--gold", "--run-id", "r", "--output-dir", tmp_path / "afile" / "sub"))
    assert "afile is a file" in line
    line = one_line_error(cli("run-batch", "-c", config, "-i", instances, "-o", tmp_path / "afile" / "out", "--no-progress"))
    assert "afile is a file" in line
    assert snapshot(tmp_path) == before
