"""Trajectories and predictions that SWE-agent's and SWE-smith's own tools read.

- Every step's `query` items are SWE-agent history items (`role`, `content`, `agent`, `message_type`;
  `thought`, `action`, `tool_calls` on assistant items; `tool_call_ids` as a list on tool results),
  with this project's keys (`model_role`, `model_name`, `tool_call_id`, `is_format_error`) as extras.
- run-batch writes `<id>/<id>.pred` beside each `.traj`; SWE-agent's merge-preds rule (re-implemented
  below from SWE-agent 1.1's `sweagent/run/merge_predictions.py`) finds them and yields our preds.json.
- One `model_name_or_path` convention: `<student>+<expert>` (or the model's name), in run-batch's
  preds.json and `.pred` files and in `merge-preds` over a trajectory folder.
- Slow: SWE-smith's `transform_to_ft` (PyPI `swesmith==0.0.4`, installed with --no-deps into its own
  venv) runs on trajectories this toolkit wrote, and its messages equal our `convert` output except
  for the differences documented in `test_swesmith_transform_to_ft_reads_our_trajectories`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweagent_oec.batch import BatchRun
from sweagent_oec.config import build_config
from sweagent_oec.data.trajectory import find_trajectories, load_trajectory
from sweagent_oec.harness.predictions import load_predictions, merge_predictions
from sweagent_oec.tasks.instances import write_instances_jsonl
from tests.agent_helpers import SOLUTION, switching_config, tinycalc, write_replay

CLI = [sys.executable, "-m", "sweagent_oec.cli"]
SWESMITH = "swesmith==0.0.4"  # the last release that ships traj_mgr/transform_to_ft.py (0.0.6+ renamed it collect_trajs)


def xml_student_to_tool_expert(tmp_path: Path) -> dict:
    """An XML-calling student (echo commands, a str_replace_editor view) hands over to a function-calling
    expert that solves the task (SWE-agent's tool-calling shape after the switch)."""
    student = write_replay(tmp_path, [
        {"thought": "Look at the code first.", "action": "str_replace_editor view /testbed/calc.py"},
        {"thought": "", "action": "echo student-probe"}, {"thought": "again", "action": "echo student-probe-2"}], "student.jsonl")
    expert = write_replay(tmp_path, [
        {"thought": "The denominator adds one.", "action": "str_replace_editor str_replace /testbed/calc.py "
                                                           "--old_str '(len(values) + 1)' --new_str 'len(values)'"},
        {"thought": "Run the tests.", "action": "python -m pytest -q -p no:cacheprovider tests"},
        {"thought": "", "action": "submit"}], "expert.jsonl")
    side = lambda path, style: {"name": "replay", "replay_path": str(path), "tools": {"parse_function": {"type": style}}}  # noqa: E731
    return switching_config(side(student, "xml_function_calling"), side(expert, "function_calling"),
                            {"type": "random_step_range", "start_step": 1, "end_step": 3}, seed=3)


def run_batch(tmp_path: Path, data: dict, n: int = 2) -> tuple[Path, Path]:
    base = tinycalc(tmp_path)
    instances = [base.model_copy(update={"instance_id": f"tiny-{i:02d}"}) for i in range(n)]
    path = tmp_path / "instances.jsonl"
    write_instances_jsonl(path, instances)
    out = tmp_path / "trajectories" / "oec_run"
    BatchRun(build_config(data), instances, out, num_workers=2).run(progress=False)
    return out, path


# ---------------------------------------------------------------- query items


def test_every_query_item_is_a_swe_agent_history_item(tmp_path):
    out, _ = run_batch(tmp_path, xml_student_to_tool_expert(tmp_path), n=1)
    traj = json.loads(next(iter(find_trajectories(out))).read_text())
    assert traj["info"]["oec"]["switched"]
    for step in traj["trajectory"]:
        for item in step["query"]:
            assert {"role", "content", "agent", "message_type"} <= set(item), item
            if item["role"] == "assistant":
                assert {"thought", "action", "tool_calls", "model_role", "model_name"} <= set(item), item
                assert item["message_type"] == "action" and isinstance(item["thought"], str)
            if item["role"] == "tool":
                assert isinstance(item["tool_call_ids"], list) and item["tool_call_id"] == item["tool_call_ids"][0]
    # After the switch the expert's query holds the student's turns re-rendered as tool calls.
    last = traj["trajectory"][-1]["query"]
    calls = [m["tool_calls"][0]["function"] for m in last if m["role"] == "assistant"]
    assert calls[0]["name"] == "str_replace_editor" and json.loads(calls[0]["arguments"])["command"] == "view"
    assert [m["model_role"] for m in last if m["role"] == "assistant"][0] == "student"


# ---------------------------------------------------------------- .pred files and merge-preds


def swe_agent_merge_predictions(directories: list[Path]) -> dict:
    """SWE-agent 1.1's merge rule (sweagent/run/merge_predictions.py), re-implemented: every `*.pred`
    under the folders, read as JSON; one without `model_patch` is skipped; a None patch becomes "";
    a duplicate instance id is an error."""
    data: dict = {}
    for directory in directories:
        for pred in directory.rglob("*.pred"):
            item = json.loads(pred.read_text())
            if "model_patch" not in item:
                continue
            item["model_patch"] = str(item["model_patch"]) if item["model_patch"] is not None else ""
            if item["instance_id"] in data:
                raise ValueError(f"Duplicate instance ID found: {item['instance_id']}")
            data[item["instance_id"]] = item
    return data


def test_pred_files_beside_each_traj_are_found_by_swe_agents_merge_rule(tmp_path):
    out, _ = run_batch(tmp_path, xml_student_to_tool_expert(tmp_path), n=3)
    preds = {iid: p.model_dump() for iid, p in load_predictions(out / "preds.json").items()}
    for traj in find_trajectories(out):
        pred = traj.with_suffix(".pred")
        assert pred.is_file() and json.loads(pred.read_text())["instance_id"] == traj.parent.name == traj.stem
    merged = swe_agent_merge_predictions([out])
    assert merged == preds and len(merged) == 3
    assert {p["model_name_or_path"] for p in merged.values()} == {"replay+replay"}
    assert all("return sum(values) / len(values)" in p["model_patch"] for p in merged.values())


def test_one_model_name_or_path_convention(tmp_path):
    """run-batch's preds.json, its .pred files, and merge-preds over the folder name the same model."""
    out, _ = run_batch(tmp_path, xml_student_to_tool_expert(tmp_path), n=2)
    batch = load_predictions(out / "preds.json")
    merged = merge_predictions([out])  # merge-preds reads the trajectories themselves
    assert {i: p.model_name_or_path for i, p in merged.items()} == {i: p.model_name_or_path for i, p in batch.items()}
    assert {p.model_name_or_path for p in batch.values()} == {"replay+replay"}
    single = run_batch(tmp_path / "single", {"agent": {"model": {"name": "replay", "replay_path": str(SOLUTION)}}}, n=1)[0]
    assert [p.model_name_or_path for p in load_predictions(single / "preds.json").values()] == ["replay"]
    assert [p.model_name_or_path for p in merge_predictions([single]).values()] == ["replay"]


def test_a_resumed_batch_writes_missing_pred_files_and_keeps_existing_ones(tmp_path):
    data = xml_student_to_tool_expert(tmp_path)
    out, _ = run_batch(tmp_path, data, n=2)
    lost, kept = sorted(out.rglob("*.pred"))
    lost.unlink()
    kept.write_text(kept.read_text())  # untouched content, new mtime
    mtime = kept.stat().st_mtime_ns
    run_batch(tmp_path, data, n=2)  # everything finished: nothing reruns
    assert lost.is_file() and json.loads(lost.read_text())["instance_id"] == lost.stem
    assert kept.stat().st_mtime_ns == mtime


# ---------------------------------------------------------------- SWE-smith's transform_to_ft (slow)


def swesmith_python(tmp_path_factory) -> Path:
    """A venv with SWE-smith from PyPI (no deps: transform_to_ft needs only pyyaml and tqdm), cached
    under ~/.cache/sweagent-oec (or $OEC_CACHE_DIR) across runs."""
    cache = Path(os.environ.get("OEC_CACHE_DIR") or Path.home() / ".cache" / "sweagent-oec")
    venv = cache / f"{SWESMITH.replace('==', '-')}-venv"
    python = venv / "bin" / "python"
    # (Importing transform_to_ft reads agent/swesmith_infer.yaml from the working directory: only find it.)
    probe = [str(python), "-c", "import importlib.util as u; assert u.find_spec('swesmith.train.traj_mgr.transform_to_ft')"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    SWESMITH, "pyyaml>=6", "tqdm>=4"], check=True, timeout=600)
    return python


@pytest.mark.slow
def test_swesmith_transform_to_ft_reads_our_trajectories(tmp_path, tmp_path_factory):
    """SWE-smith's own SFT converter on a switching batch this toolkit wrote (xml student -> tool-calling
    expert), against our `convert` with the student's (xml) config.

    Documented differences, asserted below:
    1. The system prompt: transform_to_ft writes the `system_template` of `agent/swesmith_infer.yaml`
       in its working directory, as is; we give it our student's rendered system message there.
    2. The end: transform_to_ft reads the last step's `query`, so it stops before the final reply
       (the submit); our record ends with that submit turn.
    3. Whitespace of an assistant turn: transform_to_ft writes `thought + "\\n\\n" + call` even for
       an empty thought (we start at the call), and puts old_str/new_str/file_text values between
       newlines (`<parameter=old_str>\\nX\\n</parameter>`; our xml renderer writes X as is). The turns are
       equal once whitespace next to the call's tags and runs of whitespace are collapsed.
    4. Roles: it turns `tool` messages into `user` ones (as our xml-style output does) and keeps no
       train flags (all turns count; ours mask the student's).
    """
    python = swesmith_python(tmp_path_factory)
    out, instances = run_batch(tmp_path, xml_student_to_tool_expert(tmp_path), n=2)
    run = lambda *args: subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=tmp_path, check=True)  # noqa: E731
    run("eval", "--instances", str(instances), "--predictions", str(out / "preds.json"), "--run-id", "compat")
    eval_dir = tmp_path / "logs" / "run_evaluation" / "compat"
    assert json.loads((eval_dir / "report.json").read_text())["resolved"] == 2
    student = tmp_path / "student.yaml"
    student.write_text(yaml.safe_dump({"agent": {"tools": {"parse_function": {"type": "xml_function_calling"}},
                                                 "model": {"name": "replay", "replay_path": "unused.jsonl"}}}))
    run("convert", str(out), "--report", str(eval_dir / "report.json"), "-o", str(tmp_path / "ours"),
        "--student-config", str(student))
    ours = {r["instance_id"]: r for r in map(json.loads, (tmp_path / "ours" / "train.jsonl").read_text().splitlines())}

    work = tmp_path / "swesmith_cwd"
    (work / "agent").mkdir(parents=True)
    system = next(iter(ours.values()))["messages"][0]["content"]
    (work / "agent" / "swesmith_infer.yaml").write_text(yaml.safe_dump({"agent": {"templates": {"system_template": system}}}))
    done = subprocess.run([str(python), "-m", "swesmith.train.traj_mgr.transform_to_ft", "--traj_dir", str(out),
                           "--eval_dir", str(eval_dir), "--style", "xml", "--only_resolved", "--out_dir", str(work)],
                          capture_output=True, text=True, cwd=work)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = {r["instance_id"]: r for r in map(json.loads, (work / "ft_xml_compat.jsonl").read_text().splitlines())}
    assert set(theirs) == set(ours) == {"tiny-00", "tiny-01"}

    # Whitespace next to the call's tags, then runs of whitespace, do not count (difference 3).
    squash = lambda text: " ".join(re.sub(r"\s*(</?(?:function|parameter)[^>]*>)\s*", r"\1", text).split())  # noqa: E731
    for iid, record in ours.items():
        mine = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        got = theirs[iid]["messages"]
        assert mine[-1]["role"] == "assistant" and "<function=submit>" in mine[-1]["content"]  # difference 2
        mine = mine[:-1]
        assert len(got) == len(mine)
        for a, b in zip(got, mine):
            assert a["role"] == b["role"]
            assert squash(a["content"]) == squash(b["content"]), (iid, a, b)  # difference 3: whitespace only
        assert got[0]["content"] == system  # difference 1
        assert any("<parameter=old_str>\n(len(values) + 1)\n</parameter>" in m["content"] for m in got)
        assert any("<parameter=old_str>(len(values) + 1)</parameter>" in m["content"] for m in mine)
