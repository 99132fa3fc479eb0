"""str_replace_editor (tools/bin), run as the agent runs it: a separate python3 process per call."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from sweagent_oec.tools.install import tool_scripts
from sweagent_oec.tools.specs import Action, from_command_line, to_command_line

BIN = Path(str(resources.files("sweagent_oec.tools") / "bin"))
EDITOR = BIN / "str_replace_editor"
# A plain system python starts faster than the project's venv (no site-packages to scan); either works.
PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable


@pytest.fixture
def editor(tmp_path):
    """Runs the editor with its own undo-state folder; returns (exit code, output)."""
    env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "OEC_TOOLS_STATE": str(tmp_path / "state"), "LANG": "C.UTF-8"}

    def run(*args: str) -> tuple[int, str]:
        done = subprocess.run([PYTHON, str(EDITOR), *args], env=env, capture_output=True, cwd=tmp_path)
        return done.returncode, (done.stdout + done.stderr).decode()

    run.env = env
    return run


@pytest.fixture
def sample(tmp_path) -> Path:
    path = tmp_path / "sample.py"
    path.write_text("one\ntwo\nthree\nfour\nfive\n")
    return path


def test_view_numbers_lines_like_cat_n(editor, sample):
    code, out = editor("view", str(sample))
    assert code == 0
    assert out == f"Here's the result of running `cat -n` on {sample}:\n     1\tone\n     2\ttwo\n     3\tthree\n" \
                  "     4\tfour\n     5\tfive\n     6\t\n"


@pytest.mark.parametrize("view_range, lines", [(["2", "3"], [2, 3]), (["4", "-1"], [4, 5, 6]), (["1", "1"], [1])])
def test_view_range(editor, sample, view_range, lines):
    code, out = editor("view", str(sample), "--view_range", *view_range)
    assert code == 0
    assert [int(line.split("\t")[0]) for line in out.splitlines()[1:]] == lines


@pytest.mark.parametrize("view_range, message", [
    (["0", "2"], "first element `0` should be within the range of lines of the file: [1, 6]"),
    (["2", "9"], "second element `9` should be smaller than the number of lines in the file: `6`"),
    (["3", "2"], "should be larger or equal than its first `3`"),
    (["a", "2"], "is not an integer"),
])
def test_view_range_errors(editor, sample, view_range, message):
    code, out = editor("view", str(sample), "--view_range", *view_range)
    assert code == 1 and out.startswith("Error: ") and message in out


def test_view_directory_lists_two_levels_without_hidden_items(editor, tmp_path):
    root = tmp_path / "repo"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "sub" / "deep.py").write_text("")
    (root / "pkg" / "mod.py").write_text("")
    (root / ".git").mkdir()
    (root / "pkg" / ".hidden").write_text("")
    (root / "top.txt").write_text("")
    code, out = editor("view", str(root))
    assert code == 0
    assert out.splitlines() == [
        f"Here's the files and directories up to 2 levels deep in {root}, excluding hidden items:",
        str(root), f"{root}/pkg", f"{root}/pkg/mod.py", f"{root}/pkg/sub", f"{root}/top.txt"]
    code, out = editor("view", str(root), "--view_range", "1", "2")
    assert code == 1 and "not allowed when `path` points to a directory" in out


def test_create_makes_parents_and_refuses_an_existing_file(editor, tmp_path, sample):
    target = tmp_path / "new" / "dir" / "file.py"
    assert editor("create", str(target), "--file_text", "x = 1\n") == (0, f"File created successfully at: {target}\n")
    assert target.read_text() == "x = 1\n"
    code, out = editor("create", str(sample), "--file_text", "overwrite")
    assert code == 1 and "File already exists" in out and sample.read_text().startswith("one")
    code, out = editor("create", str(tmp_path / "other.py"))
    assert code == 1 and "`file_text` is required" in out


def test_str_replace_needs_exactly_one_match(editor, tmp_path):
    path = tmp_path / "dup.py"
    path.write_text("x = 1\ny = 2\nx = 1\n")
    code, out = editor("str_replace", str(path), "--old_str", "z = 3", "--new_str", "w")
    assert code == 1 and "did not appear verbatim" in out
    code, out = editor("str_replace", str(path), "--old_str", "x = 1", "--new_str", "w")
    assert code == 1 and "Multiple occurrences of old_str `x = 1` in lines [1, 3]" in out
    assert path.read_text() == "x = 1\ny = 2\nx = 1\n"
    code, out = editor("str_replace", str(path), "--old_str", "", "--new_str", "w")
    assert code == 1 and "must not be empty" in out


def test_str_replace_edits_and_shows_a_snippet(editor, tmp_path):
    path = tmp_path / "long.py"
    path.write_text("".join(f"line{i}\n" for i in range(1, 21)))
    code, out = editor("str_replace", str(path), "--old_str", "line10\n", "--new_str", "ten\nTEN\n")
    assert code == 0
    assert path.read_text().splitlines()[8:12] == ["line9", "ten", "TEN", "line11"]
    numbers = [int(line.split("\t")[0]) for line in out.splitlines() if "\t" in line]
    # From 4 lines before the edit to 4 lines after it plus one per newline in new_str (SWE-agent's window).
    assert numbers == list(range(6, 17))
    assert out.startswith(f"The file {path} has been edited.") and "Review the changes" in out
    code, _ = editor("str_replace", str(path), "--old_str", "ten\nTEN\n")  # no new_str: delete
    assert code == 0 and "ten" not in path.read_text()


def test_insert_after_a_line_and_at_the_top(editor, sample):
    assert editor("insert", str(sample), "--insert_line", "2", "--new_str", "2.5")[0] == 0
    assert sample.read_text() == "one\ntwo\n2.5\nthree\nfour\nfive\n"
    code, out = editor("insert", str(sample), "--insert_line", "0", "--new_str", "zero\nzero2")
    assert code == 0 and sample.read_text().startswith("zero\nzero2\none\n")
    assert "     1\tzero" in out and "     2\tzero2" in out
    code, out = editor("insert", str(sample), "--insert_line", "99", "--new_str", "x")
    assert code == 1 and "[0, 9]" in out
    code, out = editor("insert", str(sample), "--new_str", "x")
    assert code == 1 and "`insert_line` is required" in out


def test_undo_edit_persists_between_invocations(editor, sample):
    original = sample.read_text()
    editor("str_replace", str(sample), "--old_str", "two", "--new_str", "2")
    editor("insert", str(sample), "--insert_line", "0", "--new_str", "head")
    assert sample.read_text() == "head\none\n2\nthree\nfour\nfive\n"
    code, out = editor("undo_edit", str(sample))
    assert code == 0 and out.startswith(f"Last edit to {sample} undone successfully.")
    assert sample.read_text() == "one\n2\nthree\nfour\nfive\n"
    assert editor("undo_edit", str(sample))[0] == 0
    assert sample.read_text() == original
    code, out = editor("undo_edit", str(sample))
    assert code == 1 and "No edit history found" in out


def test_paths_must_be_absolute_and_exist(editor, tmp_path):
    code, out = editor("view", "sample.py")
    assert code == 1 and "is not an absolute path" in out and f"Maybe you meant {tmp_path}/sample.py" in out
    code, out = editor("view", str(tmp_path / "missing.py"))
    assert code == 1 and "does not exist" in out
    code, out = editor("str_replace", str(tmp_path), "--old_str", "a", "--new_str", "b")
    assert code == 1 and "only the `view` command" in out
    code, out = editor("delete", str(tmp_path))
    assert code == 1 and "Unrecognized command" in out
    code, out = editor("view", str(tmp_path), "--bogus", "1")
    assert code == 1 and "Unexpected argument '--bogus'" in out


def test_long_output_is_clipped(editor, tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("y" * 100 + "\n" + "x" * 40_000 + "\n")
    code, out = editor("view", str(path))
    assert code == 0 and "<response clipped>" in out and len(out) < 17_000


def test_values_may_look_like_flags_and_bytes_survive(editor, tmp_path):
    path = tmp_path / "raw.txt"
    path.write_bytes(b"keep \xff\xfe bytes\nold\n")
    assert editor("str_replace", str(path), "--old_str", "old", "--new_str", "--new_str")[0] == 0
    assert path.read_bytes() == b"keep \xff\xfe bytes\n--new_str\n"


@pytest.mark.parametrize("text", [
    "multi\nline\n\n  indented\n",
    "it's \"quoted\" with $HOME and `ticks` and \\backslash",
    "ünïcødé ✓ 中文\n",
    "--starts-like-a-flag",
    "",
])
def test_command_lines_round_trip_into_the_script(editor, tmp_path, text):
    path = str(tmp_path / "rt.txt")
    action = Action("str_replace_editor", {"command": "create", "path": path, "file_text": text})
    line = to_command_line(action)
    assert from_command_line(line) == action
    done = subprocess.run(["bash", "-c", line], env=editor.env, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert Path(path).read_text() == text
    view = Action("str_replace_editor", {"command": "view", "path": path, "view_range": [1, -1]})
    assert from_command_line(to_command_line(view)) == view


def test_scripts_are_standard_library_python_38(tmp_path):
    scripts = tool_scripts()
    assert "str_replace_editor" in scripts
    for name, source in scripts.items():
        assert source.startswith("#!/usr/bin/env python3\n"), name
        tree = ast.parse(source, feature_version=(3, 8))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert imported <= set(sys.stdlib_module_names), (name, imported - set(sys.stdlib_module_names))
        assert os.access(BIN / name, os.X_OK), f"{name} is not executable"


# ---------------------------------------------------------------- file map (USE_FILEMAP)


def _big_module(functions: int = 60) -> str:
    body = "".join(f"    total += {j}  # enough text to make the file large enough\n" for j in range(8))
    parts = ["import os\n", "\n", "class Holder:\n", "    def tiny(self):\n", "        return 1\n", "\n"]
    for i in range(functions):
        parts.append(f"def function_{i}(total):\n{body}    return total\n\n")
    parts.append("async def last():\n    def nested():\n" + "".join(f"        n = {j}\n" for j in range(6)) + "        return n\n"
                 + "    return nested()\n")
    return "".join(parts)


def test_filemap_outlines_a_large_python_file(editor, tmp_path):
    path = tmp_path / "big.py"
    path.write_text(_big_module())
    assert len(path.read_text()) > 16000
    env = {**editor.env, "OEC_USE_FILEMAP": "true"}
    done = subprocess.run([PYTHON, str(EDITOR), "view", str(path)], env=env, capture_output=True)
    out = done.stdout.decode()
    assert done.returncode == 0 and out.startswith("<NOTE>This file is too large")
    lines = out.splitlines()
    assert "     1\timport os" in lines and "     4\t    def tiny(self):" in lines and "     5\t        return 1" in lines
    # function_0 is lines 7-16: its 9-line body is elided; its signature stays with its line number.
    assert "     7\tdef function_0(total):" in lines and "     8\t... eliding lines 8-16 ..." in lines
    assert "total += 3" not in out and "<response clipped>" not in out
    # A nested function's body goes with the body it is in: one marker, no marker inside it.
    last = next(i for i, line in enumerate(lines) if line.endswith("async def last():"))
    assert "... eliding lines" in lines[last + 1] and "nested" not in out


@pytest.mark.parametrize("case", ["off", "small", "not_python", "does_not_parse", "view_range"])
def test_filemap_applies_only_to_large_parsable_python_files_viewed_whole(editor, tmp_path, case):
    text = _big_module() if case != "small" else _big_module(2)
    if case == "does_not_parse":
        text += "def broken(:\n"
    path = tmp_path / ("big.txt" if case == "not_python" else "big.py")
    path.write_text(text)
    env = {**editor.env, "OEC_USE_FILEMAP": "false" if case == "off" else "true"}
    args = ["--view_range", "1", "20"] if case == "view_range" else []
    out = subprocess.run([PYTHON, str(EDITOR), "view", str(path), *args], env=env, capture_output=True).stdout.decode()
    assert "eliding" not in out and out.startswith("Here's the result of running `cat -n`")
    assert "total += 3" in out
