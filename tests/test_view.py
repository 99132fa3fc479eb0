"""The viewer on a real switching batch (run, eval, convert), checked as data and in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sweagent_oec.config import build_config
from sweagent_oec.runner import run_instance
from sweagent_oec.tasks.instances import write_instances_jsonl
from sweagent_oec.view.collect import collect
from sweagent_oec.view.page import render_html
from tests.agent_helpers import SOLUTION, switching_config, tinycalc, write_replay

ROOT = Path(__file__).parent.parent
ARTIFACTS = Path(os.environ.get("OEC_TEST_ARTIFACTS", ROOT / "test-artifacts"))
HOSTILE = '</script><script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'


def cli(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "sweagent_oec.cli", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "OEC_LOG_LEVEL": "WARNING"}, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def replay_side(path):
    return {"name": "replay", "replay_path": str(path), "tools": {"parse_function": {"type": "function_calling"}}}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Three real runs on tinycalc: a switch after a malformed student reply, a student that submits
    alone, and a student whose command prints markup meant to break the page."""
    tmp = tmp_path_factory.mktemp("viewbatch")
    base = tinycalc(tmp)
    student = write_replay(tmp, ["no action here", {"thought": "look", "action": "ls"},
                                 {"thought": "read", "action": "cat calc.py"}] + [{"thought": "x", "action": "echo x"}] * 5,
                           "student.jsonl")
    hostile = write_replay(tmp, [{"thought": HOSTILE, "action": f"printf '%s\\n' '{HOSTILE}'"}] * 3, "hostile.jsonl")
    runs = {
        "calc__switch": switching_config(replay_side(student), replay_side(SOLUTION), {"type": "step_count", "threshold": 2},
                                         count_format_errors_as_steps=False),
        "calc__alone": switching_config(replay_side(SOLUTION), replay_side(student), {"type": "step_count", "threshold": 50}),
        "calc__hostile": switching_config(replay_side(hostile), replay_side(SOLUTION), {"type": "step_count", "threshold": 1}),
    }
    out, instances = tmp / "trajs", []
    for iid, config in runs.items():
        instance = base.model_copy(update={"instance_id": iid})
        run_instance(build_config(config), instance, out)
        instances.append(instance)
    write_instances_jsonl(tmp / "instances.jsonl", instances)
    cli("merge-preds", str(out), "-o", str(tmp / "preds.json"), cwd=tmp)
    cli("eval", "--instances", str(tmp / "instances.jsonl"), "--predictions", str(tmp / "preds.json"),
        "--run-id", "v", "--output-dir", str(tmp / "logs"), cwd=tmp)
    cli("convert", str(out), "--report", str(tmp / "logs" / "v" / "report.json"), "-o", str(tmp / "sft"), "--no-dataset", cwd=tmp)
    return tmp, out


def test_collect_reads_roles_switch_eval_and_training(batch):
    tmp, out = batch
    data = collect(out, tmp / "logs" / "v" / "report.json", tmp / "sft")
    by_id = {i["id"]: i for i in data["instances"]}
    assert set(by_id) == {"calc__switch", "calc__alone", "calc__hostile"} and data["unreadable"] == []
    switch = by_id["calc__switch"]
    assert switch["switch_step"] == 2 and switch["student_steps"] == 2 and switch["expert_steps"] == 5
    assert [s["role"] for s in switch["steps"]] == ["student"] * 2 + ["expert"] * 5
    assert switch["format_errors"] == 1 and switch["steps"][0]["format_errors"][0]["response"] == "no action here"
    assert switch["resolved"] is True and switch["tests_status"]["FAIL_TO_PASS"]["success"]
    # convert trains the expert's turns only; the viewer shows which.
    assert [s["trained"] for s in switch["steps"]] == [False] * 2 + [True] * 5
    alone = by_id["calc__alone"]
    assert alone["switch_step"] is None and alone["expert_steps"] == 0 and alone["trained_turns"] is None  # student-only: not OEC data


def test_page_embeds_agent_text_inertly(batch):
    _, out = batch
    html = render_html(collect(out))
    assert "pwned" in html  # the text is there, as data
    assert "</script><script>" not in html and "<img" not in html


def test_view_command_writes_the_page_and_says_where(batch, tmp_path):
    tmp, out = batch
    said = cli("view", str(out), "--report", str(tmp / "logs" / "v"), "--sft", str(tmp / "sft"), "-o", str(tmp_path), cwd=tmp)
    assert f"wrote {tmp_path / 'view.html'}" in said and "3 trajectories" in said
    assert (tmp_path / "view.html").stat().st_mode & 0o044  # readable by the group and others under umask 022


def test_view_reads_swe_agents_own_trajectories(tmp_path):
    src = ROOT / "tests" / "data" / "fixtures" / "swe_agent_traj" / "marshmallow-1867.function_calling.traj"
    data = collect(src)
    (inst,) = data["instances"]
    assert inst["steps_total"] > 0 and {s["role"] for s in inst["steps"]} == {"agent"} and inst["switch_step"] is None


def test_bad_inputs_are_one_line_errors(tmp_path):
    from sweagent_oec.errors import UserError

    with pytest.raises(UserError, match="no .traj files"):
        collect(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "x.traj").write_text("{not json")
    with pytest.raises(UserError, match="could be read"):
        collect(tmp_path)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_viewer_in_a_real_browser(batch, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    browser_path = _chromium()
    if not browser_path:
        pytest.skip("no chromium on this machine (Debian package 'chromium'; scripts/bootstrap.sh installs it as root)")
    tmp, out = batch
    page_path = tmp_path / "view.html"
    page_path.write_text(render_html(collect(out, tmp / "logs" / "v", tmp / "sft")))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            assert page.locator("#batch tbody tr").count() == 3
            page.locator('#batch tbody tr[data-id="calc__switch"]').click()
            marker = page.locator("#switch-marker")
            assert marker.count() == 1
            around = marker.evaluate("m => [m.previousElementSibling.dataset.role, m.nextElementSibling.dataset.role,"
                                     " m.nextElementSibling.dataset.step]")
            assert around == ["student", "expert", "2"]
            assert page.locator(".step.student").count() == 2 and page.locator(".step.expert").count() == 5
            assert page.locator(".step .tag.trained").count() == 5 and page.locator(".format-error").count() == 1
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "view_switch.png"))
            # Filter by exit status: every run here submitted; an unknown status empties the table.
            statuses = page.locator("#f-exit option").evaluate_all("os => os.map(o => o.value).filter(Boolean)")
            assert statuses == ["submitted"]
            page.select_option("#f-exit", "submitted")
            assert page.locator("#batch tbody tr").count() == 3
            page.select_option("#f-resolved", "false")
            unresolved = page.locator("#batch tbody tr").evaluate_all("rs => rs.map(r => r.dataset.id)")
            page.select_option("#f-resolved", "")
            assert "calc__switch" not in unresolved
            # The hostile run: its markup shows as text, nothing of it runs or renders.
            page.locator('#batch tbody tr[data-id="calc__hostile"]').click()
            assert page.title().startswith("sweagent-oec view") and page.locator("img").count() == 0
            assert "document.title" in page.locator(".step").first.inner_text()
            page.screenshot(path=str(ARTIFACTS / "view_hostile.png"))
            assert errors == []
        finally:
            browser.close()
