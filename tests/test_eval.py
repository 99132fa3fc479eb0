"""`sweagent-oec eval` end to end on the bundled tinycalc task, with the real local runtime and git."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweagent_oec.cli import app
from sweagent_oec.harness.evaluate import EvalOptions, evaluate, pytest_command
from sweagent_oec.harness.predictions import Prediction, write_predictions
from sweagent_oec.tasks.bundled import materialize_tinycalc
from sweagent_oec.tasks.instances import Instance

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    return materialize_tinycalc(tmp_path_factory.mktemp("tinycalc"))


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True).stdout


def make_patch(task: Instance, tmp: Path, edit) -> str:
    """A diff against the task state: check out base + bug, let `edit(repo)` change files, diff."""
    repo = tmp / "work"
    if not repo.exists():
        _git(tmp, "clone", "-q", task.local.repo_dir, str(repo))
        subprocess.run(["git", "apply"], cwd=repo, input=task.patch, text=True, check=True)
        _git(repo, "commit", "-qam", "bug")
    _git(repo, "reset", "-q", "--hard", "HEAD")
    edit(repo)
    return _git(repo, "diff")


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def fix(repo: Path) -> None:
    replace_in(repo / "calc.py", "(len(values) + 1)", "len(values)")


def opts(tmp: Path, **kw) -> EvalOptions:
    return EvalOptions(run_id=kw.pop("run_id", "run"), output_dir=tmp / "logs", progress=False, **kw)


def _variant(task: Instance, suffix: str) -> Instance:
    return task.model_copy(update={"instance_id": f"{task.instance_id}.{suffix}"})


def _report(tmp: Path, iid: str, run_id: str = "run") -> dict:
    return json.loads((tmp / "logs" / run_id / iid / "report.json").read_text())


def test_outcomes_of_one_batch(task: Instance, tmp_path: Path) -> None:
    """Fix, empty, test-editing, non-applying and syntax-breaking patches, and a missing instance."""
    cases = {
        "fix": make_patch(task, tmp_path, fix),
        "empty": "",
        "none": None,
        # Makes the buggy mean "pass" by editing the test's expectations: restored before the run.
        "edits_tests": make_patch(task, tmp_path, lambda r: (replace_in(r / "tests/test_calc.py", "== 2.5", "== 2.0"),
                                                              replace_in(r / "tests/test_calc.py", "== 7", "== 3.5"))),
        "no_apply": "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n-nothing like this\n+at all\n context\n",
        # Every test vanishes from the log when the module cannot be imported: strict grading fails it.
        "syntax": make_patch(task, tmp_path, lambda r: replace_in(r / "calc.py", "def add(a, b):", "def add(a, b)")),
    }
    instances = [_variant(task, name) for name in cases]
    preds = {f"{task.instance_id}.{name}": Prediction(instance_id=f"{task.instance_id}.{name}", model_name_or_path="m", model_patch=patch)
             for name, patch in cases.items()}
    preds["not_in_dataset"] = Prediction(instance_id="not_in_dataset", model_name_or_path="m", model_patch="x")
    agg = evaluate(instances, preds, opts(tmp_path, workers=2))

    r = {name: _report(tmp_path, f"{task.instance_id}.{name}") for name in cases}
    assert r["fix"]["resolved"] and r["fix"]["patch_successfully_applied"] and "error" not in r["fix"]
    assert r["fix"]["model_name_or_path"] == "m"
    assert r["empty"]["error"].startswith("empty_patch") and not r["empty"]["resolved"] and not r["empty"]["patch_exists"]
    assert r["none"]["patch_is_None"] and r["none"]["error"].startswith("empty_patch")
    edits = r["edits_tests"]
    assert edits["patch_successfully_applied"] and not edits["resolved"]
    assert edits["tests_status"]["FAIL_TO_PASS"]["failure"] == task.FAIL_TO_PASS
    assert r["no_apply"]["error"] == "patch_apply_failed: error: calc.py: patch does not apply"
    assert not r["no_apply"]["patch_successfully_applied"] and "tests_status" not in r["no_apply"]
    assert not r["syntax"]["resolved"] and r["syntax"]["tests_status"]["PASS_TO_PASS"]["failure"] == task.PASS_TO_PASS

    run = tmp_path / "logs" / "run"
    fix_dir = run / f"{task.instance_id}.fix"
    assert (fix_dir / "patch.diff").read_text() == cases["fix"]
    assert "+ : '>>>>> Start Test Output'" in (fix_dir / "test_output.txt").read_text()
    assert ">>>>> Patch Apply Failed" in (run / f"{task.instance_id}.no_apply" / "test_output.txt").read_text()
    assert agg == json.loads((run / "report.json").read_text())
    assert agg["total"] == 6 and agg["resolved"] == 1 and agg["unresolved"] == 2 and agg["error"] == 3
    assert set(agg["errors"]) == {f"{task.instance_id}.{n}" for n in ("empty", "none", "no_apply")}
    assert "not_in_dataset" not in json.dumps(agg)


PASS_EVERYTHING = """import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outcome.get_result().outcome = "passed"
"""


def test_patch_cannot_change_how_tests_run(task: Instance, tmp_path: Path) -> None:
    """A conftest.py that turns every failure into a pass (and a pytest.ini) is undone before the run."""
    def hack(repo: Path) -> None:
        (repo / "tests" / "conftest.py").write_text(PASS_EVERYTHING)
        (repo / "pytest.ini").write_text("[pytest]\naddopts = -p no:randomly\n")
        _git(repo, "add", "-N", "tests/conftest.py", "pytest.ini")

    hack_patch = make_patch(task, tmp_path, hack)
    # The hack works when nothing undoes it: the buggy code, patched, passes its own tests.
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=tmp_path / "work", capture_output=True, text=True)
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout

    cases = {"hack": hack_patch, "fix_and_hack": make_patch(task, tmp_path, lambda r: (fix(r), hack(r)))}
    preds = {f"{task.instance_id}.{n}": Prediction(instance_id=f"{task.instance_id}.{n}", model_name_or_path="m", model_patch=p) for n, p in cases.items()}
    evaluate([_variant(task, n) for n in cases], preds, opts(tmp_path))
    hacked = _report(tmp_path, f"{task.instance_id}.hack")
    assert hacked["patch_successfully_applied"] and not hacked["resolved"]
    assert hacked["tests_status"]["FAIL_TO_PASS"]["failure"] == task.FAIL_TO_PASS
    # A patch that ships a report-rewriting hook is suspected of tampering even when it also fixes the bug.
    fix_and_hack = _report(tmp_path, f"{task.instance_id}.fix_and_hack")
    assert not fix_and_hack["resolved"] and fix_and_hack["unresolved_reason"].startswith("suspected_test_tampering")
    assert fix_and_hack["tests_status"]["FAIL_TO_PASS"]["failure"] == []  # the undo kept the tests honest
    log = (tmp_path / "logs" / "run" / f"{task.instance_id}.hack" / "test_output.txt").read_text()
    assert "undid the patch's changes to test configuration: pytest.ini tests/conftest.py" in log


BREAK_CLAMP = """import pytest

import calc


@pytest.fixture(autouse=True)
def _broken_clamp(monkeypatch):
    monkeypatch.setattr(calc, "clamp", lambda x, low, high: low)
"""


def test_a_bug_in_test_configuration_can_still_be_fixed(task: Instance, tmp_path: Path) -> None:
    """When the task's own bug lives in a conftest.py, the fix has to change it, so that file is
    spared and the gold patch resolves (elsewhere such edits are undone: the test above)."""
    def add_conftest(repo: Path) -> None:
        (repo / "tests" / "conftest.py").write_text(BREAK_CLAMP)
        _git(repo, "add", "-N", "tests/conftest.py")

    bug_in_conftest = make_patch(task, tmp_path, add_conftest)
    clamp = "tests/test_calc.py::test_clamp"
    variant = task.model_copy(update={
        "instance_id": f"{task.instance_id}.conftest_bug",
        "patch": task.patch + bug_in_conftest,
        "FAIL_TO_PASS": [*task.FAIL_TO_PASS, clamp], "PASS_TO_PASS": [t for t in task.PASS_TO_PASS if t != clamp]})
    evaluate([variant], None, opts(tmp_path, gold=True, run_id="gold"))
    report = _report(tmp_path, variant.instance_id, "gold")
    assert report["resolved"], report
    log = (tmp_path / "logs" / "gold" / variant.instance_id / "test_output.txt").read_text()
    assert "undid the patch's changes" not in log


def test_fuzzy_patch_applies_with_patch_fuzz(task: Instance, tmp_path: Path) -> None:
    # A hunk whose context line is off (a comment that is not in the file): git apply refuses,
    # `patch --fuzz` applies it.
    exact = make_patch(task, tmp_path, fix)
    fuzzy = exact.replace("         raise ValueError(\"mean of an empty list\")", "         raise ValueError(\"mean of an EMPTY list\")")
    assert fuzzy != exact
    evaluate([task], {task.instance_id: Prediction(instance_id=task.instance_id, model_patch=fuzzy)}, opts(tmp_path))
    report = _report(tmp_path, task.instance_id)
    assert report["resolved"], (tmp_path / "logs" / "run" / task.instance_id / "test_output.txt").read_text()
    assert "patch --batch --fuzz=5" in (tmp_path / "logs" / "run" / task.instance_id / "test_output.txt").read_text()


def test_hanging_test_is_a_recorded_timeout(task: Instance, tmp_path: Path) -> None:
    def hang(repo: Path) -> None:
        fix(repo)
        replace_in(repo / "calc.py", "def mean(values):\n", "def mean(values):\n    import time\n    time.sleep(100)\n")

    patch = make_patch(task, tmp_path, hang)
    agg = evaluate([task], {task.instance_id: Prediction(instance_id=task.instance_id, model_patch=patch)}, opts(tmp_path, timeout=5))
    report = _report(tmp_path, task.instance_id)
    assert report["error"].startswith("timeout") and not report["resolved"] and report["patch_successfully_applied"]
    assert agg["ids_error"] == [task.instance_id]
    assert ">>>>> Tests Timed Out" in (tmp_path / "logs" / "run" / task.instance_id / "test_output.txt").read_text()


def test_environment_failure_is_recorded(task: Instance, tmp_path: Path) -> None:
    broken = task.model_copy(update={"local": task.local.model_copy(update={"repo_dir": str(tmp_path / "nowhere")})})
    agg = evaluate([broken], {task.instance_id: Prediction(instance_id=task.instance_id, model_patch="diff")}, opts(tmp_path))
    assert agg["error"] == 1 and agg["errors"][task.instance_id].startswith("environment_error")
    assert "not a git repository" in agg["errors"][task.instance_id]


def test_cli_gold_and_resume(task: Instance, tmp_path: Path) -> None:
    instances = tmp_path / "instances.jsonl"
    second = _variant(task, "second")
    instances.write_text("".join(json.dumps(i.model_dump()) + "\n" for i in (task, second)))
    args = ["eval", "--instances", str(instances), "--gold", "--run-id", "gold", "--output-dir", str(tmp_path / "logs")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 evaluated now, 0 kept from earlier runs" in result.output
    agg = json.loads((tmp_path / "logs" / "gold" / "report.json").read_text())
    assert agg["ids_resolved"] == sorted([task.instance_id, second.instance_id])
    report = _report(tmp_path, task.instance_id, "gold")
    assert report["model_name_or_path"] == "gold" and report["patch_successfully_applied"]
    # The gold patch written is the bug patch reversed.
    assert "+    return sum(values) / len(values)" in (tmp_path / "logs" / "gold" / task.instance_id / "patch.diff").read_text()

    # Resume: an instance with a report is not re-run; --redo-existing re-runs it.
    done = tmp_path / "logs" / "gold" / task.instance_id / "report.json"
    done.write_text(json.dumps({**report, "resolved": False, "marker": "kept"}))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 evaluated now, 2 kept from earlier runs" in again.output  # counts only what it ran
    assert json.loads(done.read_text())["marker"] == "kept"
    agg = json.loads((tmp_path / "logs" / "gold" / "report.json").read_text())
    assert agg["ids_unresolved"] == [task.instance_id]  # the aggregate reads the kept report
    assert CliRunner().invoke(app, [*args, "--redo-existing", "--instance-ids", task.instance_id]).exit_code == 0
    assert "marker" not in json.loads(done.read_text())


def test_cli_predictions_and_instance_ids(task: Instance, tmp_path: Path) -> None:
    instances = tmp_path / "instances.json"
    other = _variant(task, "other")
    instances.write_text(json.dumps([task.model_dump(), other.model_dump()]))
    preds = tmp_path / "preds.json"
    patch = make_patch(task, tmp_path, fix)
    write_predictions(preds, {i.instance_id: Prediction(instance_id=i.instance_id, model_name_or_path="m", model_patch=patch) for i in (task, other)})
    result = CliRunner().invoke(app, ["eval", "--instances", str(instances), "--predictions", str(preds), "--run-id", "r",
                                      "--output-dir", str(tmp_path / "logs"), "--instance-ids", other.instance_id])
    assert result.exit_code == 0, result.output
    agg = json.loads((tmp_path / "logs" / "r" / "report.json").read_text())
    assert agg["total"] == 1 and agg["ids_resolved"] == [other.instance_id]


@pytest.mark.parametrize(
    "content, extra, fragment",
    [
        ("{broken", [], "not valid JSON"),
        ('[{"instance_id": "x"}]', [], "no 'model_patch' key"),
        ("{}", ["--gold"], "not both"),
        ("{}", ["--runtime", "podman"], "Invalid value for '--runtime'"),
    ],
)
def test_cli_bad_input_is_one_line(task: Instance, tmp_path: Path, content: str, extra: list[str], fragment: str) -> None:
    preds = tmp_path / "preds.json"
    preds.write_text(content)
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps(task.model_dump()))
    done = subprocess.run(
        [sys.executable, "-m", "sweagent_oec.cli", "eval", "--instances", str(instances), "--predictions", str(preds),
         "--run-id", "r", "--output-dir", str(tmp_path / "logs"), *extra],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], done.stderr


def test_docker_instances_get_swesmith_pytest_on_their_files() -> None:
    instance = Instance(instance_id="o__r.12345678.x", FAIL_TO_PASS=["tests/a.py::t[x y]", "tests/b.py::t"], PASS_TO_PASS=["tests/a.py::u"])
    assert pytest_command(instance) == "pytest --disable-warnings --color=no --tb=no --verbose -rA tests/a.py tests/b.py"


def test_eval_swesmith_script_merges_shards_and_evaluates(task: Instance, tmp_path: Path) -> None:
    from sweagent_oec.data.trajectory import Trajectory, TrajectoryInfo, save_trajectory, trajectory_path

    other = _variant(task, "other")
    instances = tmp_path / "instances.jsonl"
    instances.write_text("".join(json.dumps(i.model_dump()) + "\n" for i in (task, other)))
    patch = make_patch(task, tmp_path, fix)
    for shard, instance in (("shard0", task), ("shard1", other)):
        traj = Trajectory(info=TrajectoryInfo(submission=patch, exit_status="submitted"))
        save_trajectory(trajectory_path(tmp_path / "run" / shard, instance.instance_id), traj)
    script = Path(__file__).resolve().parents[1] / "scripts" / "eval_swesmith.sh"
    env = {**os.environ, "INSTANCES": str(instances), "OUTPUT_DIR": str(tmp_path / "logs"), "RUN_ID": "paper", "WORKERS": "2",
           "OEC": f"{sys.executable} -m sweagent_oec.cli"}
    done = subprocess.run(["bash", str(script), "--runtime", "local", str(tmp_path / "run" / "shard0"), str(tmp_path / "run" / "shard1")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads((tmp_path / "logs" / "paper.preds.json").read_text())) == sorted([task.instance_id, other.instance_id])
    agg = json.loads((tmp_path / "logs" / "paper" / "report.json").read_text())
    assert agg["resolved"] == 2
    bad = subprocess.run(["bash", str(script), "--runtime"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--runtime needs a value" in bad.stderr


@pytest.mark.docker
def test_docker_runtime_through_the_same_code(task: Instance, tmp_path: Path) -> None:
    """tinycalc as a SWE-smith image (no `local`): SWE-smith's pytest command on the listed files."""
    from sweagent_oec.env.runtime import EnvConfig
    from tests.docker_engine import TEST_REPO, docker_env_config

    # In SWE-smith's images the project is installed in the test env; here PYTHONPATH stands in.
    env = EnvConfig(type="docker", env_variables={"PYTHONPATH": "/testbed"}, **docker_env_config())
    image_task = task.model_copy(update={"repo": TEST_REPO, "local": None})
    agg = evaluate([image_task], None, opts(tmp_path, run_id="gold", gold=True, env=env))
    assert agg["ids_resolved"] == [task.instance_id], (tmp_path / "logs" / "gold" / task.instance_id / "test_output.txt").read_text()
    log = (tmp_path / "logs" / "gold" / task.instance_id / "test_output.txt").read_text()
    assert "pytest --disable-warnings --color=no --tb=no --verbose -rA tests/test_calc.py" in log
    edits = make_patch(task, tmp_path, lambda r: replace_in(r / "tests/test_calc.py", "== 2.5", "== 2.0"))
    agg = evaluate([image_task], {task.instance_id: Prediction(instance_id=task.instance_id, model_patch=edits)}, opts(tmp_path, run_id="p", env=env))
    assert agg["ids_unresolved"] == [task.instance_id]


@pytest.mark.docker
def test_docker_eval_restores_tests_the_branch_removed(task: Instance, tmp_path: Path) -> None:
    """SWE-smith's branches delete the FAIL_TO_PASS test files in their last commit: the agent never
    sees them, and evaluation brings them back from the image's own history."""
    import docker

    from sweagent_oec.env import make_runtime
    from sweagent_oec.env.runtime import SOURCE_GIT_DIR, EnvConfig
    from tests.docker_engine import TEST_IMAGE, TEST_REPO, docker_env_config

    engine = docker_env_config()
    client = docker.DockerClient(base_url=engine["docker_host"])
    hidden = "oec-test/tinycalc-hidden-tests:latest"
    container = client.containers.run(TEST_IMAGE, "sleep infinity", detach=True, network_mode="none")
    try:
        done = container.exec_run(["bash", "-c", f"cd /testbed && git checkout -q {task.instance_id} && "
                                   "git rm -q tests/test_calc.py && git -c user.name=x -c user.email=x@x commit -qm 'Remove F2P Tests'"])
        assert done.exit_code == 0, done.output
        container.commit(repository=hidden.split(":")[0], tag="latest")
    finally:
        container.remove(force=True)
    env = EnvConfig(type="docker", env_variables={"PYTHONPATH": "/testbed"}, docker_host=engine["docker_host"], image_name=hidden)
    image_task = task.model_copy(update={"repo": TEST_REPO, "local": None})

    agent_side = make_runtime(image_task, env)  # what an agent gets: no tests, no history to find them in
    try:
        listing = agent_side.run(f"ls tests/; ls {SOURCE_GIT_DIR} 2>&1; git log --oneline | wc -l").output
        assert "test_calc.py" not in listing and "No such file" in listing and listing.strip().endswith("1")
    finally:
        agent_side.close()

    agg = evaluate([image_task], None, opts(tmp_path, run_id="hidden", gold=True, env=env))
    log = (tmp_path / "logs" / "hidden" / task.instance_id / "test_output.txt").read_text()
    assert agg["ids_resolved"] == [task.instance_id], log
    assert "PASSED tests/test_calc.py::test_mean" in log


def test_strict_and_swesmith_differ_on_pass_to_pass_outside_the_fail_to_pass_files(task: Instance, tmp_path: Path) -> None:
    """The measured example of the harness README: a patch that fixes `mean` but breaks `add` for negative
    numbers, tested only in another file. SWE-smith grades PASS_TO_PASS only in the FAIL_TO_PASS files:
    resolved under --grading swesmith, unresolved under strict."""
    repo = tmp_path / "two_files"
    _git(tmp_path, "clone", "-q", task.local.repo_dir, str(repo))
    (repo / "tests" / "test_more.py").write_text("from calc import add\n\n\ndef test_add_negative():\n    assert add(-1, -1) == -2\n")
    _git(repo, "add", "tests/test_more.py")
    _git(repo, "commit", "-qm", "more tests")
    other = "tests/test_more.py::test_add_negative"
    instance = task.model_copy(update={
        "instance_id": f"{task.instance_id}.two_files", "base_commit": _git(repo, "rev-parse", "HEAD").strip(),
        "PASS_TO_PASS": [*task.PASS_TO_PASS, other], "local": task.local.model_copy(update={"repo_dir": str(repo)})})
    (tmp_path / "p").mkdir()
    patch = make_patch(instance, tmp_path / "p", lambda r: (fix(r), replace_in(r / "calc.py", "return a + b", "return abs(a) + abs(b)")))
    for policy in ("strict", "swesmith"):
        evaluate([instance], {instance.instance_id: Prediction(instance_id=instance.instance_id, model_patch=patch)},
                 opts(tmp_path, run_id=policy, policy=policy))
    strict, swesmith = _report(tmp_path, instance.instance_id, "strict"), _report(tmp_path, instance.instance_id, "swesmith")
    assert not strict["resolved"] and strict["tests_status"]["PASS_TO_PASS"]["failure"] == [other]
    assert swesmith["resolved"] and other not in json.dumps(swesmith["tests_status"])
    assert "FAILED tests/test_more.py::test_add_negative" in (tmp_path / "logs" / "swesmith" / instance.instance_id / "test_output.txt").read_text()
