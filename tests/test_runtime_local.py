"""The local runtime's own promises: the bubblewrap sandbox, the unconfined mode, its inputs.

Hostile commands against the sandbox are in test_sandbox_hostile.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sweagent_oec.env.local import LocalRuntime
from sweagent_oec.env.runtime import EnvConfig
from sweagent_oec.errors import UserError
from sweagent_oec.tasks.bundled import materialize_tinycalc

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture
def started(tmp_path):
    runtimes = []

    def start(config: EnvConfig | None = None, **instance_changes) -> LocalRuntime:
        instance = materialize_tinycalc(tmp_path / f"task{len(runtimes)}")
        instance = instance.model_copy(update=instance_changes)
        runtime = LocalRuntime.from_instance(instance, config or EnvConfig())
        runtimes.append(runtime)
        return runtime

    yield start
    for runtime in runtimes:
        runtime.close()


@pytest.fixture
def listening_port():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    yield server.getsockname()[1]
    server.close()


def _connect_command(port: int) -> str:
    return f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3); print('connected')\""


@pytest.fixture
def path_without_bwrap(tmp_path, monkeypatch):
    """A PATH holding the tools the runtime needs, but no bwrap."""
    folder = tmp_path / "bin_without_bwrap"
    folder.mkdir()
    for tool in ("git", "tar", "bash"):
        (folder / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(folder))


@needs_bwrap
def test_bwrap_confines_writes_to_the_private_copy(started):
    rt = started()
    assert (rt.info.type, rt.info.sandbox, rt.info.workdir) == ("local", "bwrap", "/testbed")
    assert rt.run("touch /etc/oec_probe", timeout=10).exit_code != 0
    assert not Path("/etc/oec_probe").exists()
    host_home = Path(os.path.expanduser("~"))
    probe = host_home / f"oec_probe_{uuid.uuid4().hex}"
    rt.run(f"touch {probe}", timeout=10)
    assert not probe.exists()
    assert rt.run('echo "$HOME"', timeout=10).output.strip() != str(host_home)
    assert rt.run("touch /testbed/ok /tmp/ok ~/ok", timeout=10).exit_code == 0


@needs_bwrap
def test_bwrap_has_no_network_unless_asked(started, listening_port):
    confined = started().run(_connect_command(listening_port), timeout=15)
    assert confined.exit_code != 0 and "connected" not in confined.output
    # The same command reaches the host's port when the config allows network: the check above can fail.
    allowed = started(EnvConfig(network=True)).run(_connect_command(listening_port), timeout=15)
    assert allowed.output.strip() == "connected"


@needs_bwrap
def test_host_side_writes_cannot_escape_through_symlinks(started):
    rt = started()
    target = f"/etc/oec_probe_{uuid.uuid4().hex}"
    rt.run(f"ln -s {target} link", timeout=10)
    with pytest.raises(PermissionError):
        rt.write_file("/testbed/link", "x")
    with pytest.raises(PermissionError):
        rt.write_file("/etc/oec_probe", "x")
    assert not Path(target).exists()
    # Reads too: the host's files are not the harness's to hand back through a link the agent made.
    rt.run(f"ln -s {Path.home()} home_link && ln -s /etc/hostname etc_link", timeout=10)
    for link in ("home_link/.bashrc", "etc_link"):
        with pytest.raises(PermissionError):
            rt.read_file(f"/testbed/{link}")
    for hidden in (f"{Path.home()}/.bashrc", "/etc/shadow"):
        with pytest.raises(PermissionError, match="not visible in the sandbox"):
            rt.read_file(hidden)
    assert rt.read_file("/etc/hostname") == Path("/etc/hostname").read_text()  # what the sandbox shows
    rt.write_file("relative.txt", "relative to the workdir")
    assert rt.run("cat /testbed/relative.txt", timeout=10).output == "relative to the workdir"


def test_sandbox_none_runs_unconfined_and_says_so(started, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    rt = started(EnvConfig(sandbox="none"))
    assert rt.info.sandbox == "none" and any("unconfined" in note for note in rt.info.notes)
    workdir = Path(rt.info.workdir)
    assert workdir.is_dir() and rt.run("pwd", timeout=10).output.strip() == str(workdir)
    assert "sk-host-secret" not in rt.run("env", timeout=10).output
    rt.close()
    assert not workdir.exists()


@pytest.mark.parametrize("sandbox", ["auto", "bwrap"])
def test_without_bwrap_the_runtime_refuses_to_start_unless_none_is_chosen(started, path_without_bwrap, sandbox, tmp_path):
    with pytest.raises(UserError, match="bubblewrap, which is not installed") as refused:
        started(EnvConfig(sandbox=sandbox))
    message = str(refused.value)
    assert "\n" not in message and all(hint in message for hint in ("apt-get install bubblewrap", "env.type: docker",
                                                                     "env.sandbox: none"))
    rt = started(EnvConfig(sandbox="none"))  # the explicit choice still runs, and says so
    assert rt.info.sandbox == "none" and rt.run("echo hi", timeout=10).output == "hi\n"


def test_limits_are_in_force_unconfined_too(started):
    rt = started(EnvConfig(sandbox="none", max_processes=50))
    if rt.cgroup is None:
        pytest.skip(f"no writable cgroup here (uid {os.getuid()}): the limits are {rt.info.limits}")
    assert rt.info.as_dict()["limits"]["max_processes"] == 50 and rt.info.limits["mechanism"].startswith("cgroup")
    forks = ("import os, time\nmade = refused = 0\nfor _ in range(80):\n    try:\n        pid = os.fork()\n"
             "    except OSError:\n        refused += 1\n        continue\n    if pid == 0:\n        time.sleep(2)\n"
             "        os._exit(0)\n    made += 1\nprint(made, refused)\n")
    rt.write_file("forks.py", forks)
    made, refused = map(int, rt.run("python3 forks.py", timeout=30).output.split())
    assert made < 50 and refused == 80 - made and rt.cgroup.events()["forks_refused"] > 0
    # A process that left the session and cleared its environment is still in the cgroup: close ends it.
    word = f"1000.{uuid.uuid4().int % 10**8}"
    rt.run(f"(setsid env -i sleep {word} >/dev/null 2>&1 &)", timeout=10)
    time.sleep(0.2)
    assert _running(word)
    rt.close()
    assert not _running(word)


def test_task_environment_venv_and_pythonpath(started, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "oec-hello").write_text("#!/bin/sh\necho hello from the venv\n")
    (venv / "bin" / "oec-hello").chmod(0o755)
    rt = started(EnvConfig(env_variables={"OEC_FROM_CONFIG": "1"}), local=materialize_tinycalc(tmp_path / "t").local.model_copy(
        update={"venv": str(venv), "env": {"PYTHONPATH": ".:src:/abs"}}))
    assert rt.run("oec-hello", timeout=10).output == "hello from the venv\n"
    assert rt.run('echo "$PATH"', timeout=10).output.split(":")[1] == f"{venv}/bin"  # after the tools' folder
    w = rt.info.workdir
    assert rt.run('echo "$PYTHONPATH $OEC_FROM_CONFIG"', timeout=10).output.strip() == f"{w}:{w}/src:/abs 1"


@pytest.mark.parametrize("change, message", [
    ({"local": None}, "no `local` section"),
    ({"base_commit": "0" * 40}, "cannot check out base_commit"),
    ({"base_commit": None}, "has no base_commit"),
    ({"patch": "--- a/calc.py\n+++ b/calc.py\n@@ -1,1 +1,1 @@\n-no such line\n+x\n"}, "does not apply"),
])
def test_bad_instances_are_user_errors(started, change, message):
    with pytest.raises(UserError, match=message):
        started(**change)


def test_missing_venv_is_a_user_error(started, tmp_path):
    local = materialize_tinycalc(tmp_path / "t").local.model_copy(update={"venv": str(tmp_path / "nowhere")})
    with pytest.raises(UserError, match="has no bin/ folder"):
        started(local=local)


def test_a_plain_folder_becomes_a_committed_private_copy(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "a.py").write_text("print('a')\n")
    with LocalRuntime(folder, EnvConfig()) as rt:
        assert len(rt.base_commit) == 40
        assert rt.run("git status --porcelain; cat a.py", timeout=10).output == "print('a')\n"
        rt.run("echo changed > a.py", timeout=10)
        assert "+changed" in rt.run(f"git diff {rt.base_commit}", timeout=10).output
    assert (folder / "a.py").read_text() == "print('a')\n"  # the original is untouched
    assert not (folder / ".git").exists()


def test_a_git_folder_keeps_its_history(tmp_path):
    instance = materialize_tinycalc(tmp_path)
    with LocalRuntime(instance.local.repo_dir) as rt:
        assert rt.base_commit == instance.base_commit
        assert rt.run("git log --format=%s", timeout=10).output == "tinycalc\n"


def test_not_a_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        LocalRuntime(tmp_path / "missing")


def test_failing_startup_command_stops_the_start(started):
    from sweagent_oec.env.runtime import RuntimeError_

    with pytest.raises(RuntimeError_, match="startup command"):
        started(EnvConfig(startup_commands=["echo prepping", "false"]))


def test_startup_commands_run_before_the_first_step(started):
    rt = started(EnvConfig(startup_commands=["export OEC_READY=yes", "cd tests"]))
    assert rt.run('echo "$OEC_READY"; pwd', timeout=10).output.split() == ["yes", f"{rt.info.workdir}/tests"]


def test_closed_runtime_refuses_commands(started):
    from sweagent_oec.env.runtime import RuntimeError_

    rt = started()
    rt.close()
    with pytest.raises(RuntimeError_, match="closed"):
        rt.run("echo hi")


def test_git_inside_the_session_commits_without_host_config(started):
    rt = started()
    result = rt.run("echo x > new.txt && git add new.txt && git commit -qm 'agent commit' && git log --format=%an -1", timeout=10)
    assert result.exit_code == 0 and result.output.strip() == "oec"
    editor = rt.run("echo y >> new.txt && git commit -a", timeout=10)  # no -m: the editor must not wait
    assert not editor.timed_out and editor.exit_code != 0


def test_subprocess_git_sees_a_clean_host(tmp_path):
    # The private copy lives outside the task's repo: materializing twice does not disturb it.
    instance = materialize_tinycalc(tmp_path)
    with LocalRuntime.from_instance(instance, EnvConfig()) as rt:
        rt.run("echo broken > calc.py", timeout=10)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=instance.local.repo_dir, capture_output=True, text=True)
    assert status.stdout == ""


def _running(word: str) -> bool:
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if word.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    return True
            except OSError:
                pass
    return False


def test_a_runtime_started_in_a_finished_thread_keeps_working(tmp_path):
    import threading

    box = {}
    thread = threading.Thread(target=lambda: box.update(rt=LocalRuntime(materialize_tinycalc(tmp_path).local.repo_dir)))
    thread.start()
    thread.join()
    with box["rt"] as rt:
        assert rt.run("echo alive", timeout=10).output == "alive\n"


@needs_bwrap
def test_the_sandbox_dies_with_a_killed_host_process(tmp_path):
    word = f"1000.{uuid.uuid4().int % 10**8}"
    script = (f"from sweagent_oec.env.local import LocalRuntime\n"
              f"rt = LocalRuntime({str(tmp_path)!r})\n"
              f"rt.run('sleep {word}1 &', timeout=10)\n"
              f"print('ready', flush=True)\n"
              f"rt.run('sleep {word}2', timeout=None)\n")
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while not _running(f"{word}2") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _running(f"{word}1") and _running(f"{word}2")
    finally:
        host.kill()
        host.wait()
    deadline = time.monotonic() + 5
    while (_running(f"{word}1") or _running(f"{word}2")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(f"{word}1") and not _running(f"{word}2")
    # Its cgroup folders outlived it (nothing ran close()); the next runtime's start removes them.
    with LocalRuntime(str(tmp_path)) as rt:
        parents = {folder.parent for folder in rt.cgroup.dirs} if rt.cgroup else set()
    left = [p for parent in parents for p in parent.glob(f"*{host.pid}-*")]
    assert not left, left


def test_set_x_traces_the_agents_commands_only(started):
    rt = started()
    rt.run("set -x", timeout=10)
    traced = rt.run("echo hi", timeout=10).output
    assert "hi\n" in traced and "echo hi" in traced and "__oec" not in traced
    rt.run("set +x", timeout=10)
    assert rt.run("echo quiet", timeout=10).output == "quiet\n"
