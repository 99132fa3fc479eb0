"""Log parsing and grading: conformance with SWE-smith's real reports, and crafted logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweagent_oec.harness.grading import grade_tests, is_resolved, outcome, report_from_log
from sweagent_oec.harness.log_parser import END_LINE, START_LINE, extract_test_output, parse_pytest_log
from sweagent_oec.harness.report import aggregate_report
from sweagent_oec.tasks.instances import Instance

FIXTURES = Path(__file__).parent / "data" / "fixtures" / "swesmith"
RUNS = FIXTURES / "run_evaluation"
FIXTURE_IDS = sorted(p.name for p in RUNS.iterdir() if p.is_dir())


def _inputs(instance_id: str, report: dict) -> tuple[list[str], list[str]]:
    """FAIL_TO_PASS / PASS_TO_PASS for a fixture.

    The instance's own lists where its instance file was kept (pandas pr_53652). For the others
    no instance file exists, so the lists are rebuilt from the report: with FAIL_TO_FAIL and
    PASS_TO_FAIL empty, SWE-smith puts every listed test in exactly one of success/failure, so
    success + failure is the list (the order inside each half is the list's order, which is all
    the report shows).
    """
    instance_file = FIXTURES / f"instance.{instance_id}.json"
    if instance_file.exists():
        instance = Instance.model_validate(json.loads(instance_file.read_text()))
        return instance.FAIL_TO_PASS, instance.PASS_TO_PASS
    status = report["tests_status"]
    return (
        status["FAIL_TO_PASS"]["success"] + status["FAIL_TO_PASS"]["failure"],
        status["PASS_TO_PASS"]["success"] + status["PASS_TO_PASS"]["failure"],
    )


@pytest.mark.parametrize("policy", ["strict", "swesmith"])
@pytest.mark.parametrize("instance_id", FIXTURE_IDS)
def test_reproduces_swesmith_reports_exactly(instance_id: str, policy: str) -> None:
    expected = json.loads((RUNS / instance_id / "report.json").read_text())
    log = (RUNS / instance_id / "test_output.txt").read_text()
    fail_to_pass, pass_to_pass = _inputs(instance_id, expected)
    # The other inputs a report needs, and where each fixture's value comes from:
    # - model_patch: the prediction's patch; the fixtures say patch_is_None false and
    #   patch_exists true, i.e. a non-empty patch (its text does not enter the report).
    # - model_name_or_path: the prediction's model name, copied through.
    # - applied=False: SWE-smith's get_eval_report starts patch_successfully_applied at False and
    #   never sets it (application is logged elsewhere, not in test_output.txt), so every SWE-smith
    #   report says false, resolved ones included. Our harness passes the real outcome.
    report = report_from_log(
        log,
        fail_to_pass,
        pass_to_pass,
        model_patch="diff --git a/x b/x\n",
        model_name_or_path=expected["model_name_or_path"],
        applied=False,
        policy=policy,
    )
    assert report == expected
    assert list(report) == list(expected)  # same key order, so files diff cleanly


def test_unresolved_fixture_fails_on_its_fail_to_pass_tests() -> None:
    # pandas pr_53856: 28 FAIL_TO_PASS tests still FAILED in the log.
    iid = "pandas-dev__pandas.95280573.pr_53856"
    statuses = parse_pytest_log(extract_test_output((RUNS / iid / "test_output.txt").read_text()))
    expected = json.loads((RUNS / iid / "report.json").read_text())
    failing = expected["tests_status"]["FAIL_TO_PASS"]["failure"]
    assert len(failing) == 28 and all(statuses[t] == "FAILED" for t in failing)
    # mysql params fail in call and error in teardown: the verbose log shows FAILED then ERROR.
    assert statuses["pandas/tests/io/test_sql.py::test_dataframe_to_sql_arrow_dtypes[mysql_pymysql_engine]"] in ("FAILED", "ERROR")
    # Ids with spaces are read too (SWE-smith's `\S+` parser drops them).
    assert statuses[
        "pandas/tests/io/test_sql.py::test_api_custom_dateparsing_error[read_sql-SELECT * FROM types-mode0-raise-mysql_pymysql_engine_types]"
    ] in ("FAILED", "ERROR")


def test_pydantic_fixture_ids_with_spaces_and_brackets() -> None:
    iid = "pydantic__pydantic.acb0f10f.pr_8316"
    statuses = parse_pytest_log(extract_test_output((RUNS / iid / "test_output.txt").read_text()))
    assert statuses["tests/test_utils.py::test_display_as_type[Union-Union[int, list[str], tuple[str, int]]]"] == "PASSED"
    assert statuses["tests/test_utils.py::test_display_as_type[tuple-tuple[str, ...]]"] == "PASSED"
    assert list(statuses.values()).count("PASSED") == 169  # the log's "169 passed"


def test_aggregate_agrees_with_swesmith_aggregate() -> None:
    # The fixture aggregate covers 53 instances; the four kept here must land in the same lists.
    expected = json.loads((RUNS / "report.json").read_text())
    reports = {iid: json.loads((RUNS / iid / "report.json").read_text()) for iid in FIXTURE_IDS}
    agg = aggregate_report(reports)
    assert agg["total"] == 4 and agg["error"] == 0
    assert set(agg["ids_resolved"]) <= set(expected["ids_resolved"])
    assert set(agg["ids_unresolved"]) <= set(expected["ids_unresolved"])
    assert agg["ids_unresolved"] == ["pandas-dev__pandas.95280573.pr_53856"]


# ------------------------------------------------------------------ crafted logs

VERBOSE = """\
============================= test session starts ==============================
collecting ... collected 8 items

tests/test_a.py::test_plain PASSED                                       [ 12%]
tests/test_a.py::test_param[a b-c] FAILED                                [ 25%]
tests/test_a.py::TestK::test_m[x - y] PASSED                             [ 37%]
tests/test_a.py::test_skip SKIPPED (no reason)                           [ 50%]
tests/test_a.py::test_xf XFAIL (known)                                   [ 62%]
tests/test_a.py::test_xp XPASS (surprise)                                [ 75%]
tests/test_a.py::test_teardown PASSED                                    [ 87%]
tests/test_a.py::test_teardown ERROR                                     [ 87%]
tests/test_a.py::test_br[[1, 2]] PASSED                                  [100%]
========================= 4 passed, 1 failed in 0.10s ==========================
"""

SUMMARY = """\
..F.s
=========================== short test summary info ============================
PASSED tests/test_b.py::test_ok
PASSED tests/test_b.py::test_p[a - b]
SKIPPED [1] tests/test_b.py:10: not today
XFAIL tests/test_b.py::test_xf - reason: known bug
XPASS tests/test_b.py::test_xp unexpected
ERROR tests/test_b.py::test_fixture_err - RuntimeError: boom
FAILED tests/test_b.py::test_bad - AssertionError: assert 1 == 2
FAILED tests/test_b.py::test_q[x-y] - ValueError: a - b
FAILED tests/test_b.py::test_r[a - b] - AssertionError: c - d
ERROR tests/test_c.py - SyntaxError: invalid syntax
==================== 3 failed, 2 passed, 1 skipped in 0.12s ====================
"""


def test_verbose_lines() -> None:
    got = parse_pytest_log(VERBOSE)
    assert got == {
        "tests/test_a.py::test_plain": "PASSED",
        "tests/test_a.py::test_param[a b-c]": "FAILED",
        "tests/test_a.py::TestK::test_m[x - y]": "PASSED",
        "tests/test_a.py::test_skip": "SKIPPED",
        "tests/test_a.py::test_xf": "XFAIL",
        "tests/test_a.py::test_xp": "XPASS",
        "tests/test_a.py::test_teardown": "ERROR",  # the teardown error outranks the PASSED call
        "tests/test_a.py::test_br[[1, 2]]": "PASSED",
    }


def test_summary_lines() -> None:
    got = parse_pytest_log(SUMMARY)
    assert got == {
        "tests/test_b.py::test_ok": "PASSED",
        "tests/test_b.py::test_p[a - b]": "PASSED",
        "tests/test_b.py::test_xf": "XFAIL",
        "tests/test_b.py::test_xp": "XPASS",
        "tests/test_b.py::test_fixture_err": "ERROR",
        "tests/test_b.py::test_bad": "FAILED",
        "tests/test_b.py::test_q[x-y]": "FAILED",
        "tests/test_b.py::test_r[a - b]": "FAILED",
        "tests/test_c.py": "ERROR",
    }


def test_verbose_and_summary_together_keep_the_worse_status() -> None:
    log = "tests/t.py::test_a PASSED [ 50%]\ntests/t.py::test_b PASSED [100%]\nPASSED tests/t.py::test_a\nERROR tests/t.py::test_b - teardown\n"
    assert parse_pytest_log(log) == {"tests/t.py::test_a": "PASSED", "tests/t.py::test_b": "ERROR"}


def test_xdist_and_ansi() -> None:
    log = "[gw0] [ 50%] PASSED tests/t.py::test_a \n\x1b[32mPASSED\x1b[0m tests/t.py::test_b\n[gw1] [100%] FAILED tests/t.py::test_c\n"
    assert parse_pytest_log(log) == {"tests/t.py::test_a": "PASSED", "tests/t.py::test_b": "PASSED", "tests/t.py::test_c": "FAILED"}


def test_prose_ending_in_a_status_word_is_not_a_test() -> None:
    assert parse_pytest_log("all tests PASSED\nERROR: file or directory not found: tests/x.py\n") == {}


def test_only_between_markers() -> None:
    log = f"tests/t.py::test_a FAILED\n{START_LINE}\ntests/t.py::test_a PASSED\n{END_LINE}\ntests/t.py::test_b FAILED\n"
    assert parse_pytest_log(extract_test_output(log)) == {"tests/t.py::test_a": "PASSED"}
    # Without markers the whole log is read.
    assert parse_pytest_log(extract_test_output("tests/t.py::test_b FAILED\n")) == {"tests/t.py::test_b": "FAILED"}


def test_grading_policies() -> None:
    statuses = {"a": "PASSED", "b": "XFAIL", "c": "FAILED", "d": "ERROR", "e": "SKIPPED", "f": "XPASS"}
    strict = grade_tests(statuses, ["a", "b", "c"], ["d", "e", "f", "missing"])
    assert strict["FAIL_TO_PASS"] == {"success": ["a", "b"], "failure": ["c"]}
    assert strict["PASS_TO_PASS"] == {"success": [], "failure": ["d", "e", "f", "missing"]}
    assert strict["FAIL_TO_FAIL"] == strict["PASS_TO_FAIL"] == {"success": [], "failure": []}
    lenient = grade_tests(statuses, ["a"], ["e", "f", "missing", "d"], policy="swesmith")
    assert lenient["PASS_TO_PASS"] == {"success": ["missing"], "failure": ["d"]}
    assert outcome(None, "strict") is False and outcome(None, "swesmith") is True


def test_resolved_needs_every_fail_to_pass_and_pass_to_pass() -> None:
    ok = grade_tests({"a": "PASSED", "b": "PASSED"}, ["a"], ["b"], fail_to_fail=["z"])
    assert is_resolved(ok)  # a FAIL_TO_FAIL test failing does not count
    assert not is_resolved(grade_tests({"a": "PASSED", "b": "FAILED"}, ["a"], ["b"]))
    assert not is_resolved(grade_tests({"b": "PASSED"}, ["a"], ["b"]))  # missing under strict
    assert is_resolved(grade_tests({"b": "PASSED"}, ["a"], ["b"], policy="swesmith"))


# ------------------------------------------------------------------ --grading swesmith: SWE-smith's own grading

from sweagent_oec.harness.evaluate import _EvalError, run_plan  # noqa: E402
from sweagent_oec.harness.grading import report_from_statuses, run_problems  # noqa: E402
from sweagent_oec.harness.log_parser import PARSERS  # noqa: E402
from sweagent_oec.harness.profiles import swesmith_profile  # noqa: E402


def _fixture_instance(instance_id: str, extra_pass_to_pass: list[str] = ()) -> Instance:
    expected = json.loads((RUNS / instance_id / "report.json").read_text())
    fail_to_pass, pass_to_pass = _inputs(instance_id, expected)
    return Instance(instance_id=instance_id, FAIL_TO_PASS=fail_to_pass, PASS_TO_PASS=[*pass_to_pass, *extra_pass_to_pass])


@pytest.mark.parametrize("instance_id", FIXTURE_IDS)
def test_swesmith_plan_is_the_command_swesmith_ran(instance_id: str) -> None:
    """The command of --grading swesmith is, word for word, the one in SWE-smith's recorded log."""
    log = (RUNS / instance_id / "test_output.txt").read_text()
    recorded = log.split(START_LINE + "\n", 1)[1].splitlines()[0].removeprefix("+ ")
    plan = run_plan(_fixture_instance(instance_id), "swesmith")
    assert plan.command == recorded and plan.parser == "pytest_swesmith" and plan.pytest


@pytest.mark.parametrize("instance_id", FIXTURE_IDS)
def test_swesmith_grading_reproduces_reports_with_its_selection(instance_id: str) -> None:
    """Under --grading swesmith, PASS_TO_PASS tests outside the FAIL_TO_PASS files are neither run nor
    graded (SWE-smith's filter_irrelevant_tests): adding some changes nothing; strict fails on them."""
    expected = json.loads((RUNS / instance_id / "report.json").read_text())
    outside = ["tests/elsewhere/test_other.py::test_not_run", "zz/test_z.py::test_q[1]"]
    instance = _fixture_instance(instance_id, outside)
    plan = run_plan(instance, "swesmith")
    log = (RUNS / instance_id / "test_output.txt").read_text()
    report = report_from_log(log, instance.FAIL_TO_PASS, instance.PASS_TO_PASS, model_patch="diff --git a/x b/x\n",
                             model_name_or_path=expected["model_name_or_path"], applied=False, policy="swesmith",
                             parser=plan.parser, test_files=plan.test_files)
    assert report == expected
    strict = report_from_log(log, instance.FAIL_TO_PASS, instance.PASS_TO_PASS, model_patch="x",
                             model_name_or_path="m", applied=False, policy="strict")
    assert strict["tests_status"]["PASS_TO_PASS"]["failure"][-2:] == outside and not strict["resolved"]


def test_swesmith_parser_is_swesmiths() -> None:
    """SWE-smith's pytest parser reads `<id> STATUS` lines only and cuts ids at whitespace; ours reads more."""
    log = "tests/t.py::test_a PASSED [ 50%]\nPASSED tests/t.py::test_b\ntests/t.py::test_c[a b] FAILED\ntests/t.py::test_d XPASS\n"
    # test_b (summary shape), test_c (a space in its id) and test_d (XPASS, not a SWE-bench status) are unseen.
    assert PARSERS["pytest_swesmith"](log) == {"tests/t.py::test_a": "PASSED"}
    assert PARSERS["pytest"](log)["tests/t.py::test_c[a b]"] == "FAILED"


TORNADO_LOG = """\
test_get (tornado.test.web_test.HelloHandlerTest) ... ok
test_post (tornado.test.web_test.HelloHandlerTest) ... FAIL
test_skip (tornado.test.web_test.HelloHandlerTest) ... skipped 'no network'
FAIL: test_post (tornado.test.web_test.HelloHandlerTest)
----------------------------------------------------------------------
Ran 3 tests in 0.010s

FAILED (failures=1, skipped=1)
"""


def test_a_non_pytest_repo_uses_its_own_command_and_parser() -> None:
    instance = Instance(instance_id="tornadoweb__tornado.d5ac65c1.func_pm_op_change__x",
                        FAIL_TO_PASS=["test_get (tornado.test.web_test.HelloHandlerTest)"],
                        PASS_TO_PASS=["test_post (tornado.test.web_test.HelloHandlerTest)"])
    plan = run_plan(instance, "swesmith")
    assert plan.command == "python -m tornado.test --verbose" and plan.parser == "tornado" and not plan.pytest
    statuses = PARSERS[plan.parser](TORNADO_LOG)
    assert statuses["test_get (tornado.test.web_test.HelloHandlerTest)"] == "PASSED"
    assert statuses["test_post (tornado.test.web_test.HelloHandlerTest)"] == "FAILED"
    report = report_from_log(TORNADO_LOG, instance.FAIL_TO_PASS, instance.PASS_TO_PASS, model_patch="x",
                             model_name_or_path="m", applied=True, policy="swesmith", parser=plan.parser)
    assert report["tests_status"]["FAIL_TO_PASS"]["success"] == instance.FAIL_TO_PASS
    assert report["tests_status"]["PASS_TO_PASS"]["failure"] == instance.PASS_TO_PASS and not report["resolved"]
    go = Instance(instance_id="gin-gonic__gin.3c12d2a8.x", FAIL_TO_PASS=["TestRouter"], PASS_TO_PASS=["TestContext"])
    assert run_plan(go, "swesmith").parser == "gotest"
    assert PARSERS["gotest"]("=== RUN   TestRouter\n--- PASS: TestRouter (0.00s)\n--- FAIL: TestContext (0.01s)\n") == {
        "TestRouter": "PASSED", "TestContext": "FAILED"}


def test_unknown_non_python_repo_is_unsupported() -> None:
    rust = Instance(instance_id="BurntSushi__ripgrep.3b7fd442.x", FAIL_TO_PASS=["misc::compressed_zstd"], PASS_TO_PASS=[])
    for policy in ("strict", "swesmith"):
        with pytest.raises(_EvalError, match=r"^unsupported_repo: BurntSushi/ripgrep"):
            run_plan(rust, policy)
    # An unknown repository with pytest ids gets SWE-smith's default python command.
    assert swesmith_profile(Instance(instance_id="a__b.1234abcd.x", FAIL_TO_PASS=["t/test_x.py::t"])).test_cmd.endswith(" t/test_x.py")


def test_a_run_that_did_not_complete_is_never_resolved() -> None:
    """SWE-smith counts missing tests as passed: a log cut short (process gone, no summary) would
    resolve. Under every policy it is an incomplete run."""
    cut = "tests/t.py::test_b PASSED [ 50%]\n"  # then the process exited: no summary, test_a never ran
    for policy in ("strict", "swesmith"):
        report = report_from_log(cut, ["tests/t.py::test_a"], ["tests/t.py::test_b"], model_patch="x",
                                 model_name_or_path="m", applied=True, policy=policy)
        assert not report["resolved"] and report["unresolved_reason"].startswith("incomplete_test_run"), report
    swesmith = report_from_log(cut, ["tests/t.py::test_a"], ["tests/t.py::test_b"], model_patch="x",
                               model_name_or_path="m", applied=True, policy="swesmith")
    assert swesmith["tests_status"]["FAIL_TO_PASS"] == {"success": ["tests/t.py::test_a"], "failure": []}  # SWE-smith's grade
    assert "no test session summary" in swesmith["unresolved_reason"]
    assert "no FAIL_TO_PASS test was observed" in swesmith["unresolved_reason"]


def test_run_problems() -> None:
    ok = {"a": "PASSED", "b": "FAILED"}
    summary = "===== 1 failed, 1 passed in 0.10s =====\n"
    assert run_problems(ok, ["a"], log=summary, pytest_log=True, exit_code=1) == []
    assert "exited 0 although" in run_problems(ok, ["a"], log=summary, pytest_log=True, exit_code=0)[0]
    assert "exited with status 2" in run_problems(ok, ["a"], log=summary, pytest_log=True, exit_code=2)[0]
    assert run_problems({"a": "SKIPPED"}, ["a"]) == ["no FAIL_TO_PASS test was observed passing or failing"]
    assert run_problems({}, [], log="Results (0.77s):\n       169 passed\n", pytest_log=True) == []  # pytest-pretty
    report = report_from_statuses({"a": "PASSED"}, ["a"], [], model_patch="x", model_name_or_path="m", applied=True,
                                  tampering=["x", "x"], problems=["y"])
    assert report["unresolved_reason"] == "suspected_test_tampering: x" and not report["resolved"]
