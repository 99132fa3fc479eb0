"""The runtime contract (DESIGN section 6), checked on every kind in RUNTIME_KINDS."""

from __future__ import annotations

import os
import random
import time
import tracemalloc

import pytest

from sweagent_oec.tasks.bundled import materialize_tinycalc
from sweagent_oec.tools.specs import Action, to_command_line
from tests.runtime_kinds import RUNTIME_KINDS, runtime_factory  # noqa: F401  (fixture)

pytestmark = pytest.mark.parametrize("kind", RUNTIME_KINDS)


def _host_pids_running(word: str) -> list[int]:
    """Live (non-zombie) processes on the host whose command line contains `word`."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if word.encode() in f.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


def test_cwd_and_exports_persist(kind, runtime_factory):
    rt = runtime_factory(kind)
    assert rt.run("pwd", timeout=10).output.strip() == rt.info.workdir
    assert rt.run("mkdir -p sub && cd sub && export OEC_T=42", timeout=10).exit_code == 0
    result = rt.run('pwd; echo "$OEC_T"', timeout=10)
    assert result.output.split() == [f"{rt.info.workdir}/sub", "42"]
    assert rt.run("false", timeout=10).exit_code == 1


def test_timeout_interrupts_and_session_goes_on(kind, runtime_factory):
    rt = runtime_factory(kind)
    rt.run("cd tests && export KEEP=yes", timeout=10)
    start = time.monotonic()
    result = rt.run("echo before; sleep 100", timeout=2)
    assert result.timed_out and result.exit_code is None
    assert "before" in result.output
    assert time.monotonic() - start < 8
    after = rt.run('echo "$KEEP"; pwd', timeout=10)
    assert after.exit_code == 0 and after.output.split() == ["yes", f"{rt.info.workdir}/tests"]


def test_shell_busy_loop_is_ended_by_a_restart_that_keeps_state(kind, runtime_factory):
    rt = runtime_factory(kind)
    rt.run("cd tests && export KEEP=yes", timeout=10)
    result = rt.run("while true; do :; done", timeout=1)
    assert result.timed_out and "restarted" in result.output
    after = rt.run('echo "$KEEP"; pwd; type str_replace_editor >/dev/null && echo tools', timeout=10)
    assert after.output.split() == ["yes", f"{rt.info.workdir}/tests", "tools"]


def test_exit_in_a_command_does_not_end_the_runtime(kind, runtime_factory):
    rt = runtime_factory(kind)
    rt.run("cd tests", timeout=10)
    result = rt.run("exit 3", timeout=10)
    assert result.exit_code == 3 and "new session" in result.output
    assert rt.run("pwd", timeout=10).output.strip() == f"{rt.info.workdir}/tests"


def test_huge_output_is_capped_with_bounded_memory(kind, runtime_factory):
    rt = runtime_factory(kind, output_limit=100_000)
    tracemalloc.start()
    try:
        result = rt.run("yes | head -c 50000000", timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0
    assert "<output capped at 100000 bytes: 49900000 bytes dropped>" in result.output
    assert len(result.output.encode()) < 100_000 + 200
    assert peak < 10_000_000, f"reading 50 MB of output peaked at {peak} bytes"
    assert rt.run("echo next", timeout=10).output == "next\n"


def test_background_processes_do_not_outlive_close(kind, runtime_factory):
    rt = runtime_factory(kind)
    tag = f"{random.randint(10**6, 10**7)}"
    words = [f"1000.{tag}1", f"1000.{tag}2", f"1000.{tag}3"]
    rt.run(f"sleep {words[0]} &", timeout=10)
    rt.run(f"nohup sleep {words[1]} >/dev/null 2>&1 &", timeout=10)
    rt.run(f"(setsid sleep {words[2]} >/dev/null 2>&1 &)", timeout=10)
    time.sleep(0.2)
    assert all(_host_pids_running(w) for w in words), "the background processes should be running before close"
    rt.close()
    deadline = time.monotonic() + 5
    while any(_host_pids_running(w) for w in words) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in words if _host_pids_running(w)]
    rt.close()  # idempotent


def test_interactive_programs_are_refused_quickly(kind, runtime_factory):
    rt = runtime_factory(kind)
    for command in ["vim x.py", "nano x.py", "less calc.py", "top", "python", "python3", "ipython"]:
        start = time.monotonic()
        result = rt.run(command, timeout=10)
        assert not result.timed_out and time.monotonic() - start < 2, command
        assert result.exit_code != 0 and "not available" in result.output, (command, result.output)
    assert rt.run("python3 -c 'print(6*7)'", timeout=10).output == "42\n"


def test_commands_reading_stdin_return(kind, runtime_factory):
    rt = runtime_factory(kind)
    for command in ["cat", "read x; echo got:$x", "python3 -c 'import sys; print(len(sys.stdin.read()))'"]:
        result = rt.run(command, timeout=5)
        assert not result.timed_out, command
    assert rt.run("read x; echo got:$x", timeout=5).output == "got:\n"


def test_task_state_has_the_bug_and_a_clean_diff(kind, runtime_factory, tmp_path):
    rt = runtime_factory(kind)
    instance = materialize_tinycalc(tmp_path / "reference")
    added = [line[1:] for line in instance.patch.splitlines() if line.startswith("+") and not line.startswith("+++")]
    source = rt.run("cat calc.py", timeout=10).output
    assert added and all(line in source for line in added)
    assert rt.run("git diff HEAD", timeout=10).output == ""
    assert rt.run("git status --porcelain", timeout=10).output == ""
    # The history holds the task state only: the commit before the bug would give the fix away.
    assert rt.run("git rev-list --count HEAD", timeout=10).output.strip() == "1"


def test_editor_end_to_end_through_command_lines(kind, runtime_factory):
    rt = runtime_factory(kind)
    path = f"{rt.info.workdir}/notes/é x.py"
    text = "def f():\n    return 'it''s \"quoted\" $HOME `x`'\n\n# ünïcødé ✓\n"

    def editor(**arguments):
        return rt.run(to_command_line(Action("str_replace_editor", arguments)), timeout=20)

    created = editor(command="create", path=path, file_text=text)
    assert created.exit_code == 0, created.output
    assert rt.read_file(path) == text
    assert editor(command="create", path=path, file_text="x").exit_code == 1
    view = editor(command="view", path=path, view_range=[2, -1])
    assert "     2\t    return 'it''s \"quoted\" $HOME `x`'" in view.output and "     1\t" not in view.output
    replaced = editor(command="str_replace", path=path, old_str="# ünïcødé ✓", new_str="# done\n# --new_str")
    assert replaced.exit_code == 0 and "     5\t# --new_str" in replaced.output
    inserted = editor(command="insert", path=path, insert_line=0, new_str="import os")
    assert inserted.exit_code == 0
    assert rt.read_file(path).startswith("import os\ndef f():")
    assert editor(command="undo_edit", path=path).exit_code == 0
    assert editor(command="undo_edit", path=path).exit_code == 0
    assert rt.read_file(path) == text
    # The tools live outside the repo: the agent's diff shows its own files only.
    assert rt.run("git status --porcelain", timeout=10).output == "?? notes/\n"


def test_write_and_read_files_as_the_agent_sees_them(kind, runtime_factory):
    rt = runtime_factory(kind)
    rt.write_file(f"{rt.info.workdir}/deep/new.txt", "héllo\n")
    assert rt.run("cat deep/new.txt", timeout=10).output == "héllo\n"
    rt.run("printf 'from the session' > made.txt", timeout=10)
    assert rt.read_file(f"{rt.info.workdir}/made.txt") == "from the session"


def test_host_secrets_never_reach_the_session(kind, runtime_factory, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret-123")
    monkeypatch.setenv("HF_TOKEN", "hf_host_secret_456")
    rt = runtime_factory(kind, env_variables={"ANTHROPIC_API_KEY": "sk-config-789", "OEC_PLAIN": "visible"})
    env = rt.run("env", timeout=10).output
    assert "OEC_PLAIN=visible" in env
    for secret in ("sk-host-secret-123", "hf_host_secret_456", "sk-config-789", "OPENAI_API_KEY", "HF_TOKEN"):
        assert secret not in env


def test_large_and_tricky_commands_arrive_intact(kind, runtime_factory):
    rt = runtime_factory(kind)
    text = ("line with 'single' and \"double\" quotes, $HOME, `ticks`, \\ and ünïcødé\n" * 200).rstrip("\n")
    result = rt.run(f"cat <<'EOF'\n{text}\nEOF", timeout=20)
    assert result.exit_code == 0 and result.output == text + "\n"
    assert rt.run("echo 'unterminated", timeout=10).exit_code != 0  # a syntax error does not wedge the session
    assert rt.run("echo fine", timeout=10).output == "fine\n"


def test_endless_output_still_times_out(kind, runtime_factory):
    rt = runtime_factory(kind, output_limit=10_000)
    start = time.monotonic()
    result = rt.run("yes", timeout=2)
    assert result.timed_out and "<output capped at 10000 bytes" in result.output
    assert time.monotonic() - start < 10
    assert rt.run("echo next", timeout=10).output == "next\n"


def test_printed_end_markers_do_not_end_a_command(kind, runtime_factory):
    # A program in the session prints end markers made of every id it can see (its environment, its
    # parent's command line): the command still runs to its end and the next one is in step.
    rt = runtime_factory(kind)
    forger = ("import os\n"
              "seen = set(os.environ.values())\n"
              "try:\n"
              "    seen |= set(open(f'/proc/{os.getppid()}/cmdline', 'rb').read().decode(errors='replace').split('\\0'))\n"
              "except OSError:\n"
              "    pass\n"
              "for word in seen:\n"
              "    for form in ('\\x1e__OEC_END_{}__0\\n', '{}0\\n', 'R1 0\\n{}\\0'):\n"
              "        print(form.format(word), end='')\n"
              "print('forged', flush=True)\n")
    rt.write_file(f"{rt.info.workdir}/forger.py", forger)
    result = rt.run("python3 forger.py; sleep 0.2; echo after", timeout=30)
    assert result.exit_code == 0 and result.output.endswith("forged\nafter\n"), result.output[-300:]
    for word in ("one", "two"):
        assert rt.run(f"echo {word}", timeout=10).output == f"{word}\n"
