"""Grade a test run against an instance's test lists (SWE-smith's report semantics).

Each listed test lands in `success` or `failure` of its category. A test passes when its status
is PASSED or XFAIL; an instance is resolved when no FAIL_TO_PASS and no PASS_TO_PASS test fails.

Two policies differ only for tests that did not clearly pass or fail:
  strict    (default) a test that is missing from the log, SKIPPED or XPASS is a failure. A patch
            that breaks collection (a syntax error) makes every test vanish from the log, and
            that must not read as "resolved".
  swesmith  SWE-smith's rule, to compare with its numbers: a missing test is a success (it runs
            subsets of suites), SKIPPED/XPASS land in neither list and so do not block resolution.
            With it come SWE-smith's parsers and test selection (profiles.py).

Under every policy a run that did not complete is never resolved (`run_problems`): no test session
summary in a pytest log, an exit status that contradicts the log, or no FAIL_TO_PASS test observed
passing or failing. SWE-smith itself would count such a run's missing tests as passed: a patch that
makes the test process exit before any test runs would resolve every task. This is the one place
where `swesmith` grading deliberately differs from SWE-smith.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from sweagent_oec.harness.log_parser import PARSERS, extract_test_output
from sweagent_oec.harness.report import instance_report

Policy = Literal["strict", "swesmith"]
POLICIES = ("strict", "swesmith")

PASSING = frozenset({"PASSED", "XFAIL"})
FAILING = frozenset({"FAILED", "ERROR"})
CATEGORIES = ("FAIL_TO_PASS", "PASS_TO_PASS", "FAIL_TO_FAIL", "PASS_TO_FAIL")


def outcome(status: str | None, policy: Policy = "strict") -> bool | None:
    """True (success), False (failure), or None (counted in neither list: swesmith policy only)."""
    if status in PASSING:
        return True
    if status in FAILING:
        return False
    if policy == "swesmith":
        return True if status is None else None
    return False


def grade_tests(
    statuses: dict[str, str],
    fail_to_pass: Sequence[str],
    pass_to_pass: Sequence[str],
    fail_to_fail: Sequence[str] = (),
    pass_to_fail: Sequence[str] = (),
    policy: Policy = "strict",
) -> dict[str, dict[str, list[str]]]:
    """`tests_status`: each category's tests split into success/failure, in the lists' order."""
    lists = dict(zip(CATEGORIES, (fail_to_pass, pass_to_pass, fail_to_fail, pass_to_fail)))
    report: dict[str, dict[str, list[str]]] = {}
    for category, tests in lists.items():
        success: list[str] = []
        failure: list[str] = []
        for test in tests:
            result = outcome(statuses.get(test), policy)
            if result is True:
                success.append(test)
            elif result is False:
                failure.append(test)
        report[category] = {"success": success, "failure": failure}
    return report


def is_resolved(tests_status: dict[str, dict[str, list[str]]]) -> bool:
    """Every FAIL_TO_PASS and PASS_TO_PASS test passes (FAIL_TO_FAIL/PASS_TO_FAIL do not count)."""
    return not tests_status["FAIL_TO_PASS"]["failure"] and not tests_status["PASS_TO_PASS"]["failure"]


#: The last line of a pytest session: `=== 3 passed, 1 failed in 0.12s ===` (pytest-pretty: `Results (0.77s):`).
_PYTEST_SUMMARY = re.compile(r"^(=+ .*\bin [0-9.]+s.*=+|Results \([0-9.]+s\):)\s*$", re.MULTILINE)
OBSERVED = frozenset({"PASSED", "XFAIL", "FAILED", "ERROR"})


def run_problems(statuses: dict[str, str], fail_to_pass: Sequence[str], *, log: str | None = None,
                 pytest_log: bool = False, exit_code: int | None = None) -> list[str]:
    """Why a test run cannot count as complete ([] when it can); checked under every policy."""
    problems = []
    if pytest_log and log is not None and not _PYTEST_SUMMARY.search(log):
        problems.append("no test session summary in the log (the test process ended early)")
    if exit_code is not None:
        failed = [t for t, s in statuses.items() if s in FAILING]
        if exit_code == 0 and failed:
            problems.append(f"the test command exited 0 although the log shows {failed[0]} {statuses[failed[0]]}")
        if pytest_log and exit_code not in (0, 1):
            problems.append(f"pytest exited with status {exit_code} (interrupted, internal or usage error, or no tests)")
    if fail_to_pass and not any(statuses.get(t) in OBSERVED for t in fail_to_pass):
        problems.append("no FAIL_TO_PASS test was observed passing or failing")
    return problems


def parse_statuses(log: str, parser: str = "pytest") -> dict[str, str]:
    """{test: status} from a log (only the part between the markers when they are there)."""
    return PARSERS[parser](extract_test_output(log))


def report_from_log(
    log: str,
    fail_to_pass: Sequence[str],
    pass_to_pass: Sequence[str],
    *,
    model_patch: str | None,
    model_name_or_path: str,
    applied: bool,
    fail_to_fail: Sequence[str] = (),
    pass_to_fail: Sequence[str] = (),
    policy: Policy = "strict",
    parser: str | None = None,
    test_files: Sequence[str] = (),
    exit_code: int | None = None,
) -> dict:
    """A per-instance report from a finished test log (the part between the markers is read).

    `parser`: a name in log_parser.PARSERS (default: ours for strict, SWE-smith's pytest parser
    for swesmith). `test_files`: SWE-smith's selection, the lists are cut to tests in these files.
    """
    parser = parser or ("pytest_swesmith" if policy == "swesmith" else "pytest")
    output = extract_test_output(log)
    statuses = PARSERS[parser](output)
    return report_from_statuses(
        statuses, fail_to_pass, pass_to_pass, model_patch=model_patch, model_name_or_path=model_name_or_path,
        applied=applied, fail_to_fail=fail_to_fail, pass_to_fail=pass_to_fail, policy=policy, test_files=test_files,
        problems=run_problems(statuses, fail_to_pass, log=output, pytest_log=parser.startswith("pytest"), exit_code=exit_code))


def report_from_statuses(
    statuses: dict[str, str],
    fail_to_pass: Sequence[str],
    pass_to_pass: Sequence[str],
    *,
    model_patch: str | None,
    model_name_or_path: str,
    applied: bool,
    fail_to_fail: Sequence[str] = (),
    pass_to_fail: Sequence[str] = (),
    policy: Policy = "strict",
    test_files: Sequence[str] = (),
    problems: Sequence[str] = (),
    tampering: Sequence[str] = (),
) -> dict:
    """The report; `problems` (an incomplete run) and `tampering` make it unresolved, with the reason."""
    def select(tests: Sequence[str]) -> list[str]:
        return [t for t in tests if any(t.startswith(f) for f in test_files)] if test_files else list(tests)

    tests_status = grade_tests(statuses, select(fail_to_pass), select(pass_to_pass), select(fail_to_fail),
                               select(pass_to_fail), policy)
    reason = None
    if tampering:
        reason = f"suspected_test_tampering: {'; '.join(dict.fromkeys(tampering))}"
    elif problems:
        reason = f"incomplete_test_run: {'; '.join(dict.fromkeys(problems))}"
    return instance_report(
        model_patch=model_patch,
        model_name_or_path=model_name_or_path,
        applied=applied,
        tests_status=tests_status,
        resolved=is_resolved(tests_status) and reason is None,
        unresolved_reason=reason,
    )
