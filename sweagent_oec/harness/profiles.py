"""SWE-smith's per-repository test commands and log parsers, as data.

Source: SWE-smith at commit cf2e649d1eb41cd467421210da7ab8d67e47161e (2025-06-19):
`swesmith/constants.py` (MAP_REPO_TO_SPECS: `test_cmd`), `swesmith/harness/utils.py`
(get_test_command: the F2P files appended when the command is pytest's; mypy's `-k` form),
`swesmith/harness/log_parsers.py` (MAP_REPO_TO_PARSER; every other repo: parse_log_pytest) and
`swesmith/harness/grading.py` (get_eval_report). That is the version that wrote the reports in
tests/data/fixtures/swesmith. (The `swesmith` package, 0.0.9 on PyPI, does not import without
docker, ghapi, python-dotenv, unidiff and swebench, reads a `.env` at import, and grades
differently: a test missing from the log fails there, and it runs the whole suite unless
`--f2p_only`. So the table is kept here, not imported.)

Only repositories whose command or parser differ from the defaults are listed; every other
repository gets `TEST_PYTEST` and SWE-smith's pytest parser, as in SWE-smith.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from sweagent_oec.tasks.instances import Instance

SOURCE = "SWE-smith cf2e649d (2025-06-19)"
TEST_PYTEST = "pytest --disable-warnings --color=no --tb=no --verbose"

#: owner/repo -> test command (SWE-smith's MAP_REPO_TO_SPECS[repo][commit]["test_cmd"]).
TEST_COMMANDS = {
    "tkrajina/gpxpy": "pytest test.py --verbose --color=no --tb=no --disable-warnings",
    "jax-ml/jax": f"{TEST_PYTEST} -n auto",
    "mido/mido": f"{TEST_PYTEST} -rs -c /dev/null",
    "paramiko/paramiko": "pytest -rA --color=no --disable-warnings",
    "un33k/python-slugify": "python test.py --verbose",
    "tornadoweb/tornado": "python -m tornado.test --verbose",
    "python/mypy": "pytest --color=no -rA -k",
    "pydantic/pydantic": f"/root/.local/bin/uv run {TEST_PYTEST}",
    "gin-gonic/gin": "go test -v ./...",
}
#: owner/repo -> parser name in log_parser.PARSERS (SWE-smith's MAP_REPO_TO_PARSER).
PARSER_NAMES = {
    "gin-gonic/gin": "gotest",
    "HIPS/autograd": "autograd",
    "paramiko/paramiko": "paramiko",
    "python/mypy": "mypy",
    "tornadoweb/tornado": "tornado",
    "un33k/python-slugify": "python_slugify",
}


@dataclass(frozen=True)
class RepoProfile:
    repo: str
    #: The command SWE-smith runs, with its test selection applied.
    test_cmd: str
    #: The files SWE-smith restricts FAIL_TO_PASS / PASS_TO_PASS to ([] = no restriction).
    test_files: list[str]
    #: Name of the log parser (log_parser.PARSERS).
    parser: str
    #: Whether the command runs pytest (and so can run under the guard).
    pytest: bool


def repo_of(instance: Instance) -> str:
    """SWE-smith's repo key: the id's part before the first '.', with '__' as '/'."""
    return instance.instance_id.split(".")[0].replace("__", "/")


def swesmith_profile(instance: Instance) -> RepoProfile:
    """SWE-smith's test command, test files and parser for an instance (get_test_command)."""
    repo = repo_of(instance)
    command = TEST_COMMANDS.get(repo, TEST_PYTEST)
    parser = PARSER_NAMES.get(repo, "pytest_swesmith")
    files: list[str] = []
    if "pytest" in command:
        if repo == "python/mypy":
            keys = " or ".join(test.rsplit("::", 1)[-1] for test in instance.FAIL_TO_PASS)
            command = f"{command} {shlex.quote(keys)}"
        else:
            files = sorted({test.split("::", 1)[0] for test in instance.FAIL_TO_PASS})
            command = " ".join([command, *map(shlex.quote, files)])
    return RepoProfile(repo=repo, test_cmd=command, test_files=files, parser=parser, pytest="pytest" in command)


def select_tests(tests: list[str], files: list[str]) -> list[str]:
    """SWE-smith's filter_irrelevant_tests: only tests in `files` (prefix match), all when none."""
    return [t for t in tests if any(t.startswith(f) for f in files)] if files else list(tests)
