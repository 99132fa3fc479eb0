"""Read a pytest log into {test id: status}, the way SWE-smith's harness reads its logs.

Two line shapes carry a test's result, and both are read:
  verbose progress   `tests/test_x.py::test_a[p q] PASSED   [ 50%]`
  `-rA` summary      `PASSED tests/test_x.py::test_a`, `FAILED tests/test_x.py::test_b - AssertionError`
(plus pytest-xdist's `[gw0] [ 50%] PASSED tests/test_x.py::test_a`). Ids may hold spaces,
brackets and dashes. When the log has SWE-smith's start/end markers, only the text between them
is read, so the harness's own output (patch application, setup) never counts as a test.
"""

from __future__ import annotations

import re

TEST_OUTPUT_START = ">>>>> Start Test Output"
TEST_OUTPUT_END = ">>>>> End Test Output"
#: How the markers appear in a log: SWE-smith's eval scripts run `: '<marker>'` under `set -x`.
START_LINE = f"+ : '{TEST_OUTPUT_START}'"
END_LINE = f"+ : '{TEST_OUTPUT_END}'"

STATUSES = ("PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL", "XPASS")
#: When one test is reported more than once (verbose line and summary line, or a call result and
#: a teardown error), the worse outcome stands: a teardown ERROR after PASSED fails the test.
_RANK = {"PASSED": 0, "XFAIL": 0, "SKIPPED": 1, "XPASS": 2, "FAILED": 3, "ERROR": 3}

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_XDIST_PREFIX = re.compile(r"^\[gw\d+\]\s+(\[\s*\d+%\]\s+)?")
_STATUS_ALT = "|".join(STATUSES)
_STATUS_WORD = re.compile(rf"^({_STATUS_ALT})(\s|$)")
#: Fallback for an id whose brackets never balance: the status ends the line.
_VERBOSE_AT_END = re.compile(rf"^(\S.*?)\s+({_STATUS_ALT})(\s+\[\s*\d+%\])?$")
_SKIP_LOCATION = re.compile(r"^\[\d+\] ")  # `SKIPPED [1] tests/x.py:12: reason` names no test


def extract_test_output(log: str) -> str:
    """The part of `log` between the start and end markers; the whole log when they are absent."""
    start = log.find(TEST_OUTPUT_START)
    end = log.find(TEST_OUTPUT_END, max(start, 0))
    if start < 0 or end < 0:
        return log
    body_start = log.find("\n", start)
    body_end = log.rfind("\n", 0, end)
    if body_start < 0 or body_end < body_start:
        return ""
    return log[body_start + 1 : body_end + 1]


def _split_id(text: str) -> tuple[str, str] | None:
    """(node id, rest): the id ends at the first whitespace outside square brackets.

    Parameter ids may hold spaces, dashes and nested brackets (`test_x[Union[str, int]]`);
    None when the brackets never balance.
    """
    depth = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        elif ch.isspace() and depth == 0:
            return text[:i], text[i:].lstrip()
    return (text, "") if depth == 0 else None


def parse_pytest_log(text: str) -> dict[str, str]:
    """{node id: status} from pytest output (statuses as in STATUSES)."""
    statuses: dict[str, str] = {}

    def record(test: str, status: str) -> None:
        old = statuses.get(test)
        if old is None or _RANK[status] >= _RANK[old]:
            statuses[test] = status

    for raw in text.splitlines():
        line = _XDIST_PREFIX.sub("", _ANSI.sub("", raw).strip())
        if not line:
            continue
        first = _STATUS_WORD.match(line)
        if first:  # summary: STATUS id [- message | reason]
            rest = line[first.end() :].lstrip()
            split = _split_id(rest)
            if rest and split and not (first.group(1) == "SKIPPED" and _SKIP_LOCATION.match(rest)):
                record(split[0], first.group(1))
            continue
        # Progress lines always name a node (`path::name`); this keeps prose that happens to
        # contain a status word ("all tests PASSED") out of the map.
        split = _split_id(line)
        if split:
            test, rest = split
            status = _STATUS_WORD.match(rest)
            if status and "::" in test:
                record(test, status.group(1))
            continue
        at_end = _VERBOSE_AT_END.match(line)
        if at_end and "::" in at_end.group(1):
            record(at_end.group(1), at_end.group(2))
    return statuses


# ------------------------------------------------------------------ SWE-smith's parsers
# Ported from SWE-smith's harness/log_parsers.py at commit cf2e649d (2025-06-19), the version whose
# reports are in tests/data/fixtures/swesmith; `--grading swesmith` reads logs with these, exactly
# as SWE-smith does (e.g. its pytest parser reads only `<id> STATUS` lines and cuts ids at the first
# whitespace). Statuses are SWE-bench's TestStatus values (it has no XPASS).
SWEBENCH_STATUSES = ("FAILED", "PASSED", "SKIPPED", "ERROR", "XFAIL")


def parse_log_pytest_swesmith(log: str) -> dict[str, str]:
    """SWE-smith's `parse_log_pytest`: `<id> <STATUS>` at a line's start; a later line wins."""
    statuses: dict[str, str] = {}
    for line in log.split("\n"):
        for status in SWEBENCH_STATUSES:
            match = re.match(rf"^(\S+)(\s+){status}", line)
            if match:
                statuses[match.group(1)] = status
    return statuses


def parse_log_gotest(log: str) -> dict[str, str]:
    """`go test -v`: `--- PASS: TestName (0.00s)`."""
    statuses: dict[str, str] = {}
    names = {"PASS": "PASSED", "FAIL": "FAILED", "SKIP": "SKIPPED"}
    for line in log.split("\n"):
        match = re.match(r"^--- (PASS|FAIL|SKIP): (.+) \((.+)\)$", line.strip())
        if match:
            statuses[match.group(2)] = names[match.group(1)]
    return statuses


def parse_log_mypy(log: str) -> dict[str, str]:
    """python/mypy: the last word of a line that mentions PASSED or FAILED."""
    statuses: dict[str, str] = {}
    for line in log.split("\n"):
        for status in ("PASSED", "FAILED"):
            if status in line:
                statuses[line.split()[-1]] = status
                break
    return statuses


def parse_log_python_slugify(log: str) -> dict[str, str]:
    """un33k/python-slugify (unittest, verbose): `test_x (module.Class) ... ok|FAIL|ERROR`."""
    statuses: dict[str, str] = {}
    pattern = r"^([a-zA-Z0-9_\-,\.\s\(\)']+)\s\.{3}\s"
    for line in log.split("\n"):
        match = re.match(f"{pattern}ok$", line)
        if match:
            statuses[match.group(1)] = "PASSED"
            continue
        for keyword, status in (("FAIL", "FAILED"), ("ERROR", "ERROR")):
            match = re.match(f"{pattern}{keyword}$", line)
            if match:
                statuses[match.group(1)] = status
    return statuses


def parse_log_tornado(log: str) -> dict[str, str]:
    """tornadoweb/tornado (`python -m tornado.test --verbose`)."""
    statuses: dict[str, str] = {}
    for line in log.split("\n"):
        if line.endswith("... ok"):
            statuses[line.split(" ... ")[0]] = "PASSED"
        elif " ... skipped " in line:
            statuses[line.split(" ... ")[0]] = "SKIPPED"
        elif any(line.startswith(x) for x in ("ERROR:", "FAIL:")):
            statuses[" ".join(line.split()[1:3])] = "FAILED"
    return statuses


def parse_log_paramiko(log: str) -> dict[str, str]:
    """paramiko/paramiko (`pytest -rA`): `STATUS <id>` at a line's start."""
    statuses: dict[str, str] = {}
    for line in log.split("\n"):
        for status in SWEBENCH_STATUSES:
            match = re.match(rf"^{status}\s(\S+)", line)
            if match:
                statuses[match.group(1)] = status
    return statuses


def parse_log_autograd(log: str) -> dict[str, str]:
    """HIPS/autograd (pytest-xdist): `[gwN] STATUS <id>`."""
    statuses: dict[str, str] = {}
    for line in log.split("\n"):
        for status in SWEBENCH_STATUSES:
            match = re.match(rf"^\[gw\d\]\s{status}\s(\S+)", line)
            if match:
                statuses[match.group(1)] = status
    return statuses


PARSERS = {
    "pytest": parse_pytest_log,
    "pytest_swesmith": parse_log_pytest_swesmith,
    "gotest": parse_log_gotest,
    "mypy": parse_log_mypy,
    "python_slugify": parse_log_python_slugify,
    "tornado": parse_log_tornado,
    "paramiko": parse_log_paramiko,
    "autograd": parse_log_autograd,
}
