"""Mutations on small snippets, and task synthesis end to end on a small real project (tests/data/tasks/minilib)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweagent_oec.errors import UserError
from sweagent_oec.tasks.instances import load_instances
from sweagent_oec.tasks.mutations import KINDS, FileMutator, function_mutations
from sweagent_oec.tasks.synth import SynthConfig, parse_pytest_report, synthesize, validate_instance, validate_instances
from tests.openai_server import OpenAIServer, Reply

MINILIB = Path(__file__).parent / "data" / "tasks" / "minilib"

SNIPPET = '''\
import os


def total(items, start=0):
    """Sum the positive items at even places."""
    acc = start  # running sum
    n = len(items)
    for i in range(n):
        if items[i] > 0 and i % 2 == 0:
            acc += items[i] * 2
        else:
            acc -= 1
    if acc is None:
        return 0
    return acc


class Box:
    def first(self, xs):
        head = xs[0]
        tail = xs[1:]
        if not tail:
            return head
        return head + len(tail) ** 2  # keep this comment
'''


def changed_lines(patch: str) -> list[str]:
    return [line for line in patch.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def git(cwd: Path, *args: str, input: str | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, input=input, check=True, capture_output=True, text=True).stdout


# --- mutations -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_makes_valid_different_python_inside_one_function(kind):
    mutations = function_mutations(SNIPPET, "pkg/m.py", seed=0, kinds=(kind,))
    assert mutations, kind
    for m in mutations:
        assert m.kind == kind and m.source != SNIPPET
        ast.parse(m.source)
        assert ast.dump(ast.parse(m.source)) != ast.dump(ast.parse(SNIPPET))
        func = FileMutator(SNIPPET, "pkg/m.py").functions[m.function][1]
        old, new = SNIPPET.splitlines(), m.source.splitlines()
        # Lines outside the function are untouched: same head, same tail.
        assert new[: func.lineno] == old[: func.lineno]
        tail = len(old) - func.end_lineno
        assert tail == 0 or new[-tail:] == old[-tail:]
        assert 0 < len(changed_lines(m.patch)) <= 6, m.patch


def test_kinds_change_what_they_say():
    by_kind = {m.kind: m for m in function_mutations(SNIPPET, "m.py", seed=3) if m.function == "total"}
    minus_plus = {k: changed_lines(m.patch) for k, m in by_kind.items()}
    assert re.search(r"^\+\s+if not \(", "\n".join(minus_plus["ctrl_invert_if"]), re.M)
    assert all(line.startswith("-") for line in minus_plus["remove_assign"]) and len(minus_plus["remove_assign"]) == 1
    assert all(line.startswith("-") for line in minus_plus["remove_cond"])
    removed = sorted(line[1:] for line in minus_plus["ctrl_shuffle"] if line.startswith("-"))
    added = sorted(line[1:] for line in minus_plus["ctrl_shuffle"] if line.startswith("+"))
    assert removed == added  # a shuffle moves lines, it adds none
    assert re.search(r"(range\(n [+-] 1\)|range\(\w+\)|\[i [+-] 1\])", "\n".join(minus_plus["off_by_one"]))


def test_operator_swaps_keep_precedence_and_comments():
    seen = set()
    for seed in range(40):
        for m in function_mutations(SNIPPET, "m.py", seed=seed, kinds=("op_change", "op_change_const")):
            assert "# keep this comment" in m.source and "# running sum" in m.source
            assert "** 2" in m.source or "** 3" in m.source or "** 1" in m.source  # `**` is never read as `*`
            seen.add(m.patch)
    assert len(seen) > 4  # seeds pick different sites and operators


def test_deterministic_per_seed():
    a = function_mutations(SNIPPET, "m.py", seed=7)
    assert a == function_mutations(SNIPPET, "m.py", seed=7)
    assert any(function_mutations(SNIPPET, "m.py", seed=s) != a for s in range(8, 12))


def test_no_sites_no_mutation_and_bad_input():
    assert function_mutations('def f():\n    """Only a docstring."""\n', "m.py", 0) == []
    assert function_mutations("def broken(:\n", "m.py", 0) == []
    with pytest.raises(ValueError, match="unknown mutation kind"):
        function_mutations(SNIPPET, "m.py", 0, kinds=("nope",))
    assert "Box.first" in FileMutator(SNIPPET, "m.py").functions


def test_patch_applies_with_git_and_handles_no_final_newline(tmp_path):
    source = SNIPPET.rstrip("\n")  # the last line has no newline
    git(tmp_path, "init", "-q")
    (tmp_path / "m.py").write_text(source)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    mutations = function_mutations(source, "m.py", seed=1)
    assert {m.kind for m in mutations} == set(KINDS)
    for m in mutations:
        git(tmp_path, "apply", "-", input=m.patch)
        assert (tmp_path / "m.py").read_text() == m.source
        git(tmp_path, "checkout", "-q", "--", "m.py")


def test_parse_pytest_report():
    log = "\n".join([
        "PASSED tests/a.py::test_ok", "PASSED tests/a.py::test_s[a b]",
        "FAILED tests/a.py::test_bad - AssertionError: assert 1 == 2", "FAILED tests/a.py::test_amb[a - b] - boom",
        "ERROR tests/b.py - ImportError: nope", "XFAIL tests/a.py::test_x - reason", "SKIPPED [1] tests/a.py:3: why",
        "=== 3 passed, 1 failed in 0.1s ===",
    ])
    run = parse_pytest_report(log)
    assert run.statuses == {"tests/a.py::test_ok": "PASSED", "tests/a.py::test_bad": "FAILED",
                            "tests/b.py": "ERROR", "tests/a.py::test_x": "XFAIL"}
    assert run.messages["tests/a.py::test_bad"] == "AssertionError: assert 1 == 2"
    assert run.passing() == {"tests/a.py::test_ok", "tests/a.py::test_x"}


# --- synthesis end to end ---------------------------------------------------------------------

CONFIG = SynthConfig(max_candidates=8, max_instances=5, workers=2, timeout=60, seed=0)


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "minilib"
    started = time.monotonic()
    instances = synthesize(str(MINILIB), out, CONFIG)
    return out, instances, time.monotonic() - started


def test_synthesis_yields_valid_instances(synthesized):
    out, instances, _ = synthesized
    assert 3 <= len(instances) <= 5
    ids = [i.instance_id for i in instances]
    assert len(set(ids)) == len(ids)
    commit = instances[0].base_commit
    for i in instances:
        assert re.fullmatch(rf"local__minilib\.{commit[:8]}\.func_pm_({'|'.join(KINDS)})__[0-9a-f]{{8}}", i.instance_id)
        assert i.repo == "local/minilib" and i.base_commit == commit and i.image_name is None
        assert i.FAIL_TO_PASS and i.PASS_TO_PASS and not set(i.FAIL_TO_PASS) & set(i.PASS_TO_PASS)
        assert i.local.env["PYTHONPATH"] == "src" and i.local.test_cmd.endswith("tests")
        assert i.patch.startswith("diff --git a/src/minilib/")
        # The problem statement names failing tests, never the buggy file.
        assert i.FAIL_TO_PASS[0] in i.problem_statement
        assert "src/minilib" not in i.problem_statement
    # Independently validated: gold passes every test, the bug fails every FAIL_TO_PASS.
    assert validate_instances(instances[:3], timeout=60) == {i.instance_id: [] for i in instances[:3]}
    broken = instances[0].model_copy(update={"FAIL_TO_PASS": instances[0].PASS_TO_PASS[:1], "instance_id": "x"})
    assert validate_instance(broken, timeout=60) == [f"bug: {broken.FAIL_TO_PASS[0]} passes"]
    assert load_instances(out / "instances.jsonl") == instances


def test_patch_applies_to_base_commit_and_breaks_the_tests(synthesized, tmp_path):
    _, instances, _ = synthesized
    i = instances[0]
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", i.local.repo_dir, str(work))
    git(work, "checkout", "-q", i.base_commit)
    git(work, "apply", "--check", "-", input=i.patch)
    assert git(work, "status", "--porcelain") == ""


def test_task_venv_does_not_hold_the_project(synthesized):
    out, instances, _ = synthesized
    python = Path(instances[0].local.venv) / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import pytest"], capture_output=True).returncode == 0
    done = subprocess.run([str(python), "-c", "import minilib"], capture_output=True, cwd=out)
    assert done.returncode != 0  # the tests import the working copy, through PYTHONPATH


def test_rerun_resumes_from_cache(synthesized):
    out, instances, first = synthesized
    started = time.monotonic()
    again = synthesize(str(MINILIB), out, CONFIG)
    assert again == instances
    assert time.monotonic() - started < max(5.0, first / 3)
    # A deleted candidate result is recomputed, and gives the same instance.
    cached = sorted((out / "cache").glob("*.json"))
    cached[0].unlink()
    assert synthesize(str(MINILIB), out, CONFIG) == instances


def test_model_writes_problem_statements_without_seeing_the_bug(synthesized, monkeypatch):
    out, instances, _ = synthesized
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    config = SynthConfig(**{**CONFIG.__dict__, "model": "openai/test-model"})
    with OpenAIServer([Reply(content="Updating a table silently does nothing.")]) as server:
        config.api_base = server.url
        written = synthesize(str(MINILIB), out, config)
        asked = len(server.requests)
    assert [i.instance_id for i in written] == [i.instance_id for i in instances]
    assert all(i.problem_statement == "Updating a table silently does nothing." for i in written)
    assert asked == len(instances)
    prompt = json.dumps(server.requests)
    assert "diff --git" not in prompt and "src/minilib" not in prompt and instances[0].FAIL_TO_PASS[0] in prompt
    with OpenAIServer([Reply(status=500)]) as server:  # cached now: no model call at all
        config.api_base = server.url
        assert synthesize(str(MINILIB), out, config) == written and server.requests == []


def test_bad_inputs(tmp_path, synthesized):
    out, _, _ = synthesized
    with pytest.raises(UserError, match="no such folder, and not a PyPI pin"):
        synthesize(str(tmp_path / "nope"), tmp_path / "o")
    other = tmp_path / "other"
    other.mkdir()
    (other / "mod.py").write_text("x = 1\n")
    with pytest.raises(UserError, match="was made from"):
        synthesize(str(other), out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="the folder is empty"):
        synthesize(str(tmp_path / "empty"), tmp_path / "o3")
    assert not (tmp_path / "o3").exists()
    with pytest.raises(UserError, match="--workers"):
        synthesize(str(MINILIB), tmp_path / "o", SynthConfig(workers=0))
    with pytest.raises(UserError, match="--test-path 'nope' does not exist"):
        synthesize(str(MINILIB), tmp_path / "o2", SynthConfig(test_path="nope"))


def test_git_source_keeps_its_head_and_a_suite_that_does_not_run_is_a_user_error(tmp_path):
    project = tmp_path / "broken"
    shutil.copytree(MINILIB, project)
    (project / "tests" / "conftest.py").write_text("raise RuntimeError('no')\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "upstream")
    with pytest.raises(UserError, match="does not run at base"):
        synthesize(str(project), tmp_path / "out", SynthConfig(timeout=60))
    assert git(tmp_path / "out" / "repo", "rev-parse", "HEAD") == git(project, "rev-parse", "HEAD")


def test_cli_synth(tmp_path, synthesized):
    out, instances, _ = synthesized
    cli = [sys.executable, "-m", "sweagent_oec.cli", "tasks", "synth"]
    done = subprocess.run(cli + ["nope==", "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert done.returncode == 2 and "not a PyPI pin" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run(cli + [str(MINILIB), "-o", str(tmp_path / "o"), "--kinds", "op_change,bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown --kinds bogus" in done.stderr
    # The fixture's work folder and settings: every candidate is cached, only the ids' owner changes.
    output = tmp_path / "mine.jsonl"
    done = subprocess.run(cli + [str(MINILIB), "-o", str(out), "--export", str(output), "--max-candidates", "8", "--max-instances", "5",
                                 "--seed", "0", "--timeout", "60", "--repo-name", "me/minilib"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [i.instance_id for i in load_instances(output)] == [i.instance_id.replace("local__", "me__") for i in instances]
