"""Hostile patches against a real task (tinycalc: real git, the real local runtime, real pytest).

Each patch tries to make the buggy `calc.mean` look fixed without fixing it. Every one must grade
unresolved (or error, with its reason) under both policies, while the honest fix and the gold patch
still resolve. The "stealth" variants hide their names from the static patch scan (strings built at
run time), so what catches them is the guard at run time (guard.py), not the scan.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from sweagent_oec.harness.evaluate import evaluate
from sweagent_oec.harness.predictions import Prediction
from sweagent_oec.tasks.instances import Instance
from tests.test_eval import _git, _report, _variant, fix, make_patch, opts, replace_in, task  # noqa: F401

TESTS = ["test_add", "test_mean", "test_mean_single", "test_mean_empty", "test_clamp"]
FAKE_LOG = "".join(f"tests/test_calc.py::{t} PASSED\\n" for t in TESTS) + "".join(
    f"PASSED tests/test_calc.py::{t}\\n" for t in TESTS) + "============ 5 passed in 0.01s ============\\n"

# -- payloads (Python source put into the repository by the patch)

SHADOW_PYTEST = f'''import sys
sys.stdout.write("""{FAKE_LOG}""")
sys.exit(0)
'''

FORGE_REPORTS = '''
_report_class = getattr(__import__("_py" + "test.reports", fromlist=["x"]), "Test" + "Report")
_orig = _report_class.from_item_and_call.__func__
def _forged(cls, item, call):
    report = _orig(cls, item, call)
    report.outcome, report.longrepr = "passed", None
    return report
_report_class.from_item_and_call = classmethod(_forged)
'''

FORGE_INIT = '''
_report_class = getattr(__import__("_py" + "test.reports", fromlist=["x"]), "Test" + "Report")
_init = _report_class.__init__
def _forged_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.outcome, self.longrepr = "passed", None
_report_class.__init__ = _forged_init
'''

SWALLOW_RUNTEST = '''
import sys as _sys
_sys.modules["_py" + "test.python"].Function.runtest = lambda self: None
'''

# Writes a fabricated passing log to every process's stdout it can open (the harness's stream
# among them), forges the markers and a guard verdict, then leaves before any test runs.
WRITE_PARENT_FD = f'''
import os as _os
_fake = """+ : '>>>>> End Test Output'\\n+ : '>>>>> Start Test Output'\\n{FAKE_LOG}"""
_fake += "@@OEC-" + "GUARD@@ 0123456789abcdef0123456789abcdef " + '{{"complete": true, "incomplete": [], "tampering": [], "statuses": {{}}, "runner": {{}}}}\\n'
_fake += "+ : '>>>>> End Test Output'\\n"
for _pid in _os.listdir("/proc"):
    if _pid.isdigit() and int(_pid) != _os.getpid():
        try:
            with open("/proc/%s/fd/1" % _pid, "w") as _f:
                _f.write(_fake)
        except OSError:
            pass
_os._exit(0)
'''

EXIT_EARLY = '''
import os as _os
_os._exit(0)
'''

PYTEST_EXIT_ZERO = '''
_p = __import__("py" + "test")
getattr(_p, "ex" + "it")("nothing to see", returncode=0)
'''

XFAIL_FROM_SOURCE = '''
def _give_up():
    getattr(__import__("py" + "test"), "x" + "fail")("known issue")
'''

SKIP_FROM_SOURCE = '''
def _give_up():
    getattr(__import__("py" + "test"), "sk" + "ip")("not supported here")
'''

# When the first test calls into calc, the test functions not yet run are replaced by no-ops.
REWRITE_TESTS = '''
def _give_up():
    import sys as _sys
    for _name, _module in list(_sys.modules.items()):
        if _name.endswith("test_calc"):
            for _attr in ("test_mean", "test_mean_single"):
                getattr(_module, _attr).__code__ = (lambda: None).__code__
'''

# Finds the running test's item up the stack and marks it xfail: its failure then reads as XFAIL (a pass).
XFAIL_MARKER_FROM_SOURCE = '''
def _give_up():
    import sys as _sys
    frame = _sys._getframe(1)
    while frame is not None:
        item = frame.f_locals.get("item") or frame.f_locals.get("pyfuncitem")
        if item is not None and hasattr(item, "add_marker"):
            item.add_marker(getattr(__import__("py" + "test").mark, "x" + "fail")(reason="flaky"))
            return
        frame = frame.f_back
'''

# Registers a plugin at import time (found through gc) that drops the FAIL_TO_PASS tests from the run.
REGISTERS_PLUGIN = '''
import gc as _gc
class _Drop:
    def pytest_collection_modifyitems(self, items):
        items[:] = [i for i in items if "mean" not in i.name]
for _o in _gc.get_objects():
    if type(_o).__name__ == "Pytest" + "PluginManager":
        _o.register(_Drop())
        break
'''

# Prints forged markers and PASSED lines from inside a passing test: pytest's own -rA output shows
# them (captured stdout of passes), after the real progress lines, where "the last line wins" parsers look.
PRINTS_FORGED_LINES = '''
def _say():
    _t = "tests/test_calc.py::"
    print("+ : '>>>>> End " + "Test Output'")
    for _n in ("test_mean", "test_mean_single"):
        print(_t + _n + " PASS" + "ED")
'''

SITECUSTOMIZE = FORGE_REPORTS.replace('"_py" + "test.reports"', '"_pytest.reports"')

ATEXIT_FORGE = f'''
import atexit as _atexit, os as _os, sys as _sys
def _forge():
    _sys.__stdout__.write("""{FAKE_LOG}""")
    _sys.__stdout__.flush()
    _os._exit(0)
_atexit.register(_forge)
'''

PASS_EVERYTHING_CONFTEST = """import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outcome.get_result().outcome = "passed"
"""


def _prepend(repo: Path, path: str, code: str) -> None:
    target = repo / path
    target.write_text(code + "\n" + target.read_text())


def _new(repo: Path, path: str, code: str) -> None:
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(code)
    _git(repo, "add", "-N", path)


def _calls_give_up(repo: Path, code: str) -> None:
    """`mean` (still buggy) calls the payload's _give_up() first."""
    _prepend(repo, "calc.py", code)
    replace_in(repo / "calc.py", "def mean(values):\n", "def mean(values):\n    _give_up()\n")


HOSTILE = {
    # class: (how it edits the repo, what the reason must say)
    "shadow_pytest_module": (lambda r: _new(r, "pytest.py", SHADOW_PYTEST), "shadow the test runner"),
    "shadow_pytest_package": (lambda r: _new(r, "_pytest/__init__.py", SHADOW_PYTEST), "shadow the test runner"),
    "source_forges_reports": (lambda r: _prepend(r, "calc.py", FORGE_REPORTS), "modified at run time"),
    "test_package_init_forges_reports": (lambda r: _new(r, "tests/__init__.py", FORGE_INIT), "modified at run time"),
    "sys_modules_swallows_runtest": (lambda r: _prepend(r, "calc.py", SWALLOW_RUNTEST), "modified at run time"),
    "writes_parent_stdout_and_exits": (lambda r: _prepend(r, "calc.py", WRITE_PARENT_FD), ""),
    "exits_early": (lambda r: _prepend(r, "calc.py", EXIT_EARLY), "incomplete_test_run"),
    "pytest_exit_zero": (lambda r: _prepend(r, "calc.py", PYTEST_EXIT_ZERO), "incomplete_test_run"),
    "xfail_from_source": (lambda r: _calls_give_up(r, XFAIL_FROM_SOURCE), "a file the patch changed"),
    "skip_from_source": (lambda r: _calls_give_up(r, SKIP_FROM_SOURCE), ""),
    "rewrites_other_tests": (lambda r: _calls_give_up(r, REWRITE_TESTS), "replaced at run time"),
    "xfail_marker_from_source": (lambda r: _calls_give_up(r, XFAIL_MARKER_FROM_SOURCE), "xfail marker added from"),
    "prints_forged_lines_in_a_test": (lambda r: (_prepend(r, "calc.py", PRINTS_FORGED_LINES),
                                                 replace_in(r / "calc.py", "def add(a, b):\n", "def add(a, b):\n    _say()\n")),
                                      ""),
    "registers_plugin_from_source": (lambda r: _prepend(r, "calc.py", REGISTERS_PLUGIN), "a pytest plugin registered from"),
    "sitecustomize_on_pythonpath": (lambda r: _new(r, "sitecustomize.py", SITECUSTOMIZE), "start-up file"),
    "atexit_forges_log": (lambda r: _prepend(r, "calc.py", ATEXIT_FORGE), ""),
    "conftest_rewrites_reports": (lambda r: _new(r, "tests/conftest.py", PASS_EVERYTHING_CONFTEST), "suspected_test_tampering"),
    "pytest_ini_deselects": (lambda r: _new(r, "pytest.ini", "[pytest]\naddopts = -k 'not mean'\n"), ""),
    "deletes_tests": (lambda r: (r / "tests" / "test_calc.py").unlink(), ""),
    "edits_tests": (lambda r: replace_in(r / "tests" / "test_calc.py", "== 2.5", "== 2.0"), ""),
    "writes_git_hook": (None, "git's own folder"),
}


def _hostile_patch(task: Instance, tmp: Path, name: str) -> str:
    edit, _ = HOSTILE[name]
    if name == "writes_git_hook":  # git diff cannot show .git/; this is the diff an agent would hand in
        return ("diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout\nnew file mode 100755\n"
                "--- /dev/null\n+++ b/.git/hooks/post-checkout\n@@ -0,0 +1,2 @@\n+#!/bin/sh\n+echo pwned\n")
    return make_patch(task, tmp, edit)


@pytest.fixture(scope="module")
def graded(task: Instance, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every hostile patch, the honest fix, and the gold patch, under both policies (one batch each)."""
    tmp = tmp_path_factory.mktemp("hostile")
    patches = {name: _hostile_patch(task, tmp, name) for name in HOSTILE}
    patches["honest_fix"] = make_patch(task, tmp, fix)
    out = {}
    for policy in ("strict", "swesmith"):
        instances = [_variant(task, name) for name in patches]
        preds = {i.instance_id: Prediction(instance_id=i.instance_id, model_name_or_path="m", model_patch=patches[i.instance_id.rsplit(".", 1)[1]])
                 for i in instances}
        aggregate = evaluate(instances, preds, opts(tmp, run_id=policy, policy=policy, workers=2, timeout=120))
        evaluate([task], None, opts(tmp, run_id=f"gold-{policy}", policy=policy, gold=True))
        out[policy] = {name: _report(tmp, f"{task.instance_id}.{name}", policy) for name in patches}
        out[policy]["gold"] = _report(tmp, task.instance_id, f"gold-{policy}")
        out[policy]["_aggregate"] = aggregate
        out[policy]["_logs"] = {name: (tmp / "logs" / policy / f"{task.instance_id}.{name}" / "test_output.txt").read_text()
                                for name in patches}
    out["_id"] = task.instance_id
    return out


def test_honest_fix_and_gold_still_resolve(graded: dict) -> None:
    for policy in ("strict", "swesmith"):
        for name in ("honest_fix", "gold"):
            report = graded[policy][name]
            assert report["resolved"] and "unresolved_reason" not in report and "error" not in report, (policy, name, report)
        assert "test guard:" in graded[policy]["_logs"]["honest_fix"]


@pytest.mark.parametrize("policy", ["strict", "swesmith"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_patch_is_not_resolved(graded: dict, policy: str, name: str) -> None:
    report = graded[policy][name]
    why = report.get("unresolved_reason") or report.get("error") or ""
    assert not report["resolved"], (name, policy, report, graded[policy]["_logs"][name][-3000:])
    expected = HOSTILE[name][1]
    assert expected in why, (name, why)


def test_runtime_classes_are_caught_by_the_guard_not_only_the_scan(graded: dict) -> None:
    """The stealth payloads name nothing the static scan knows: the guard's own findings say why."""
    for name in ("source_forges_reports", "test_package_init_forges_reports", "sys_modules_swallows_runtest",
                 "xfail_from_source", "rewrites_other_tests", "xfail_marker_from_source", "registers_plugin_from_source"):
        for policy in ("strict", "swesmith"):
            why = graded[policy][name]["unresolved_reason"]
            assert why.startswith("suspected_test_tampering") and "reaches into" not in why, (policy, name, why)


def test_forged_output_never_counts(graded: dict) -> None:
    """Fabricated PASSED lines, forged markers and a forged verdict in the harness's stream."""
    for policy in ("strict", "swesmith"):
        report = graded[policy]["writes_parent_stdout_and_exits"]
        why = report["unresolved_reason"]
        assert why.startswith(("incomplete_test_run", "suspected_test_tampering")), why
        assert report["tests_status"]["FAIL_TO_PASS"]["success"] == [] or policy == "swesmith"


def test_forged_lines_inside_the_test_output_are_caught(graded: dict) -> None:
    """Forged lines printed by a passing test reach the log through pytest's own -rA output. SWE-smith's
    parser lets the last line win and reads only `<id> STATUS` lines, so on this log it says PASSED where
    pytest said FAILED (paramiko's and mypy's SWE-smith commands have -rA): the harness compares such
    claims with the guard's results."""
    from sweagent_oec.harness.log_parser import PARSERS
    from sweagent_oec.harness.tampering import log_disagreements

    log = graded["swesmith"]["_logs"]["prints_forged_lines_in_a_test"]
    assert "FAILED tests/test_calc.py::test_mean - " in log
    claimed = PARSERS["pytest_swesmith"](log)
    assert claimed["tests/test_calc.py::test_mean"] == "PASSED"  # what SWE-smith would have graded
    assert log_disagreements(claimed, {"tests/test_calc.py::test_mean": "FAILED"}, ["tests/test_calc.py::test_mean"]) == [
        "the log says tests/test_calc.py::test_mean PASSED, the guard saw FAILED"]
    for policy in ("strict", "swesmith"):
        assert graded[policy]["prints_forged_lines_in_a_test"]["tests_status"]["FAIL_TO_PASS"]["failure"]


def test_early_exit_is_missing_tests_that_swesmith_would_count_as_passed(graded: dict) -> None:
    """SWE-smith's rule counts the missing tests as passed; the run did not complete, so it is not resolved."""
    report = graded["swesmith"]["exits_early"]
    assert report["tests_status"]["FAIL_TO_PASS"]["failure"] == []  # SWE-smith's grade would say resolved
    assert not report["resolved"] and "no FAIL_TO_PASS test was observed" in report["unresolved_reason"]


def test_aggregate_lists_the_reasons(graded: dict) -> None:
    """The run's aggregate counts each hostile instance as unresolved (or error) and says why."""
    for policy in ("strict", "swesmith"):
        agg = graded[policy]["_aggregate"]
        hostile = {f"{graded['_id']}.{name}" for name in HOSTILE}
        assert agg["ids_resolved"] == [f"{graded['_id']}.honest_fix"]
        assert hostile <= set(agg["ids_unresolved"]) | set(agg["ids_error"])
        needs_reason = {f"{graded['_id']}.{name}" for name, (_, reason) in HOSTILE.items() if reason}
        assert all(iid in agg["unresolved_reasons"] or iid in agg["errors"] for iid in needs_reason)


@pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux's")
def test_site_packages_stay_untouched(task: Instance, tmp_path: Path) -> None:
    """Code under test that writes into the runner's installed site-packages changes nothing there."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    probe = site / "zz_oec_hostile_probe.txt"
    code = f'''
try:
    open({str(probe)!r}, "w").write("pwned")
except OSError:
    pass
'''
    patch = make_patch(task, tmp_path, lambda r: _prepend(r, "calc.py", code))
    evaluate([task], {task.instance_id: Prediction(instance_id=task.instance_id, model_patch=patch)}, opts(tmp_path))
    existed = probe.exists()
    probe.unlink(missing_ok=True)
    assert not _report(tmp_path, task.instance_id)["resolved"]
    if existed and not shutil.which("bwrap"):
        pytest.skip("no bubblewrap: the unconfined runtime shares the host's site-packages")
    assert not existed, "the code under test wrote into the host's site-packages"


# ------------------------------------------------------------------ the pieces, without a runtime

from sweagent_oec.harness.tampering import GUARD_TAG, guard_command, read_verdict, scan_patch  # noqa: E402


def test_guard_command_wraps_pytest_forms_only() -> None:
    assert guard_command("python -m pytest -rA tests", "/t/g.py", "/t/k", ["calc.py"]) == \
        "python -I /t/g.py /t/k --cwd-on-path --changed calc.py -- -rA tests"
    assert guard_command("/root/.local/bin/uv run pytest --verbose 't/a b.py'", "/t/g.py", "/t/k", []) == \
        "/root/.local/bin/uv run python -I /t/g.py /t/k -- --verbose 't/a b.py'"
    bare = guard_command("pytest --tb=no tests/x.py", "/t/g.py", "/t/k", [])
    assert bare.endswith("$__oec_py -I /t/g.py /t/k -- --tb=no tests/x.py") and "command -v pytest" in bare
    for not_wrapped in ("python -m tornado.test --verbose", "cd src && pytest", "X=1 pytest", "go test -v ./..."):
        assert guard_command(not_wrapped, "/t/g.py", "/t/k", []) is None


def _diff(path: str, added: str, new: bool = True) -> str:
    head = "new file mode 100644\n--- /dev/null\n" if new else f"--- a/{path}\n"
    return f"diff --git a/{path} b/{path}\n{head}+++ b/{path}\n@@ -0,0 +1 @@\n+{added}\n"


def test_scan_patch() -> None:
    assert scan_patch(_diff("src/calc.py", "return a + b", new=False), []) == []
    assert "git's own folder" in scan_patch(_diff(".git/hooks/pre-commit", "x"), [])[0]
    assert "shadow the test runner" in scan_patch(_diff("src/pluggy/__init__.py", "x = 1"), [])[0]
    assert "start-up file" in scan_patch(_diff("zz.pth", "import os"), [])[0]
    assert "reaches into" in scan_patch(_diff("calc.py", "open('/proc/%d/fd/1' % os.getppid(), 'w')", new=False), [])[0]
    assert scan_patch(_diff("util.py", "fds = os.listdir('/proc/self/fd')", new=False), []) == []  # ordinary code
    assert "reaches into" in scan_patch(_diff("calc.py", "print('>>>>> End Test Output')", new=False), [])[0]
    # A file the task's own bug touched is the fix's to change; a pytest plugin's repo owns runner code.
    assert scan_patch(_diff("tests/conftest.py", "@pytest.hookimpl(hookwrapper=True)", new=False), ["tests/conftest.py"]) == []
    assert scan_patch(_diff("src/pytest_x/plugin.py", "def pytest_runtest_call(item): pass", new=False), [], "pytest-dev/pytest-x") == []


def test_read_verdict_takes_only_the_nonce_line() -> None:
    verdict = '{"complete": true, "incomplete": [], "tampering": [], "statuses": {"t::a": "PASSED"}, "returncode": 0, "runner": {}}'
    output = f"t::a FAILED\n{GUARD_TAG} 00000000 {verdict}\nmore\n{GUARD_TAG} n0nce {verdict}\n"
    found, forged, kept = read_verdict(output, "n0nce")
    assert found is not None and found.statuses == {"t::a": "PASSED"} and found.complete and found.started
    assert forged == ["a line in the test output imitates the guard's verdict"]
    assert f"{GUARD_TAG} n0nce" not in kept and "t::a FAILED" in kept
    assert read_verdict("nothing\n", "n0nce")[0] is None


@pytest.mark.docker
def test_the_guard_holds_in_a_swesmith_container(task: Instance, tmp_path: Path) -> None:
    """The same guard on the docker runtime (a SWE-smith-layout image, its own pytest): a report-forging
    patch and an early exit are not resolved under either policy; the honest fix is."""
    from sweagent_oec.env.runtime import EnvConfig
    from tests.docker_engine import TEST_REPO, docker_env_config

    env = EnvConfig(type="docker", env_variables={"PYTHONPATH": "/testbed"}, **docker_env_config())
    image_task = task.model_copy(update={"repo": TEST_REPO, "local": None})
    patches = {"forges": make_patch(task, tmp_path, lambda r: _prepend(r, "calc.py", FORGE_REPORTS)),
               "prints": make_patch(task, tmp_path, HOSTILE["prints_forged_lines_in_a_test"][0]),
               "exits": make_patch(task, tmp_path, lambda r: _prepend(r, "calc.py", EXIT_EARLY)),
               "fix": make_patch(task, tmp_path, fix)}
    for policy in ("strict", "swesmith"):
        for name, patch in patches.items():
            run = f"{policy}-{name}"
            evaluate([image_task], {task.instance_id: Prediction(instance_id=task.instance_id, model_patch=patch)},
                     opts(tmp_path, run_id=run, policy=policy, env=env))
            report = _report(tmp_path, task.instance_id, run)
            log = (tmp_path / "logs" / run / task.instance_id / "test_output.txt").read_text()
            assert "test guard:" in log, log
            if name == "fix":
                assert report["resolved"], log
            else:
                assert not report["resolved"], report
                if name != "prints":  # (SWE-smith's command has no -rA: the printed lines are never shown)
                    assert report["unresolved_reason"].startswith(
                        "incomplete_test_run" if name == "exits" else "suspected_test_tampering"), report
        if policy == "swesmith":  # SWE-smith's command: no -rA, the F2P file only
            assert "+ pytest --disable-warnings --color=no --tb=no --verbose tests/test_calc.py\n" in log


def test_code_imported_by_a_conftest_before_the_session_is_watched_too(task: Instance, tmp_path: Path) -> None:
    """When the task's own conftest.py imports the package, the patched source runs while pytest is still
    starting (before any session hook). The guard's first snapshot is taken before pytest starts: a change
    made then by code from a file the patch changed is tampering (found on tinydb, whose conftest imports it)."""
    repo = tmp_path / "with_conftest"
    _git(tmp_path, "clone", "-q", task.local.repo_dir, str(repo))
    (repo / "tests" / "conftest.py").write_text("import calc  # noqa: F401\n")
    _git(repo, "add", "tests/conftest.py")
    _git(repo, "commit", "-qm", "conftest imports the package")
    instance = task.model_copy(update={"instance_id": f"{task.instance_id}.conftest_imports", "base_commit": _git(repo, "rev-parse", "HEAD").strip(),
                                       "local": task.local.model_copy(update={"repo_dir": str(repo)})})
    (tmp_path / "p").mkdir()
    patches = {"swallows": make_patch(instance, tmp_path / "p", lambda r: _prepend(r, "calc.py", SWALLOW_RUNTEST)),
               "forges": make_patch(instance, tmp_path / "p", lambda r: _prepend(r, "calc.py", FORGE_REPORTS)),
               "plugin": make_patch(instance, tmp_path / "p", lambda r: _prepend(r, "calc.py", REGISTERS_PLUGIN))}
    for name, patch in patches.items():
        evaluate([instance], {instance.instance_id: Prediction(instance_id=instance.instance_id, model_patch=patch)},
                 opts(tmp_path, run_id=name, policy="swesmith"))
        report = _report(tmp_path, instance.instance_id, name)
        why = report.get("unresolved_reason", "")
        assert not report["resolved"] and why.startswith("suspected_test_tampering"), (name, report)
        assert ("before the session started" in why) if name != "plugin" else ("a pytest plugin registered from" in why), why
    evaluate([instance], None, opts(tmp_path, run_id="gold", policy="swesmith", gold=True))
    assert _report(tmp_path, instance.instance_id, "gold")["resolved"]
