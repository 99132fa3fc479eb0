"""A hostile command set run inside the local runtime's sandbox, as whoever runs the tests (root on
these machines): each attempt is denied or contained, and each test asserts how.

Skips only where the kernel itself forbids what a check needs (no bubblewrap cannot be skipped:
the runtime refuses to start without it, which test_runtime_local checks).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import sweagent_oec
from sweagent_oec.env.local import LocalRuntime
from sweagent_oec.env.runtime import EnvConfig
from sweagent_oec.tasks.bundled import materialize_tinycalc

HOST_SECRET = f"sk-hostile-{uuid.uuid4().hex}"
#: CAP_SYS_ADMIN (mount), CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_SYS_PTRACE, CAP_DAC_OVERRIDE, CAP_NET_ADMIN.
DANGEROUS_CAPS = {21: "CAP_SYS_ADMIN", 16: "CAP_SYS_MODULE", 22: "CAP_SYS_BOOT", 19: "CAP_SYS_PTRACE",
                  1: "CAP_DAC_OVERRIDE", 12: "CAP_NET_ADMIN"}


@pytest.fixture
def sandboxed(tmp_path, monkeypatch):
    """`sandboxed(**env_config)`: a started local runtime on tinycalc, with a secret in the launcher's env."""
    monkeypatch.setenv("OPENAI_API_KEY", HOST_SECRET)
    started = []

    def start(**config) -> LocalRuntime:
        instance = materialize_tinycalc(tmp_path / f"task{len(started)}")
        runtime = LocalRuntime.from_instance(instance, EnvConfig(**config))
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.close()


def _needs_cgroup(rt: LocalRuntime) -> None:
    """Limits that bind root need a writable cgroup: a user without cgroup delegation gets rlimits only."""
    if rt.cgroup is None:
        pytest.skip(f"no writable cgroup here (uid {os.getuid()}, no delegation): the limits are {rt.info.limits}")


def _caps(rt: LocalRuntime) -> dict[str, int]:
    status = rt.run("cat /proc/self/status", timeout=10).output
    return {line.split(":")[0]: int(line.split()[1], 16) for line in status.splitlines() if line.startswith("Cap")}


def test_the_session_holds_no_capability_and_cannot_regain_one(sandboxed):
    rt = sandboxed()
    assert rt.info.sandbox == "bwrap"
    caps = _caps(rt)
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapInh"] == caps["CapAmb"] == 0, caps
    # In a user namespace of its own (where the kernel allows one) the bounding set is empty too.
    if rt.run("cat /proc/self/uid_map", timeout=10).output.split() != Path("/proc/self/uid_map").read_text().split():
        assert caps["CapBnd"] == 0, caps
    for bit, name in DANGEROUS_CAPS.items():
        assert not caps["CapEff"] & (1 << bit), name
    status = rt.run("grep NoNewPrivs /proc/self/status", timeout=10).output
    assert status.split() == ["NoNewPrivs:", "1"]  # a setuid program cannot give them back


def test_remounting_and_writing_the_host_is_denied(sandboxed, tmp_path):
    rt = sandboxed()
    probe = f"oec_probe_{uuid.uuid4().hex}"
    for folder in ("/usr", "/etc"):
        remount = rt.run(f"mount -o remount,rw,bind {folder} 2>&1; echo rc=$?", timeout=10).output
        assert "permission denied" in remount.lower() and "rc=0" not in remount
        write = rt.run(f"touch {folder}/{probe}", timeout=10)
        assert write.exit_code != 0 and "Read-only file system" in write.output
        assert not Path(folder, probe).exists()
    assert "permission denied" in rt.run("mount -t tmpfs none /tmp 2>&1", timeout=10).output.lower()
    unshared = rt.run("unshare -m true", timeout=10)
    assert unshared.exit_code != 0 and "Operation not permitted" in unshared.output
    mknod = rt.run("mknod /tmp/disk b 8 0", timeout=10)
    assert mknod.exit_code != 0 and "Operation not permitted" in mknod.output
    # The host's device nodes, /sys and its cgroups are not there at all.
    assert rt.run("ls /sys", timeout=10).exit_code != 0
    assert not set(rt.run("ls /dev", timeout=10).output.split()) & {"sda", "vda", "nvme0", "mem", "kmem", "port"}
    # Sysctls check only file modes: root without capabilities could set kernel.core_pattern (a helper the
    # host's kernel runs as root) or drop the host's caches. /proc/sys is read-only.
    for knob in ("kernel/core_pattern", "vm/drop_caches", "kernel/hostname"):
        write = rt.run(f"cat /proc/sys/{knob} > /proc/sys/{knob}.new 2>/dev/null; echo 1 > /proc/sys/{knob}", timeout=10)
        assert write.exit_code != 0 and "Read-only file system" in write.output, knob
    if os.path.exists("/proc/sysrq-trigger"):
        assert "Read-only file system" in rt.run("echo h > /proc/sysrq-trigger", timeout=10).output


def _init_module_errno(run) -> int:
    code = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
            "print(libc.init_module(b'\\0' * 64, 64, b''), ctypes.get_errno())")
    return int(run(code).split()[-1])


def test_loading_a_kernel_module_is_denied(sandboxed):
    rt = sandboxed()
    assert not _caps(rt)["CapEff"] & (1 << 16)  # no CAP_SYS_MODULE, in any set
    inside = _init_module_errno(lambda code: rt.run(f'python3 -c "{code}"', timeout=10).output)
    # The kernel checks CAP_SYS_MODULE first: EPERM. A kernel built without modules has no such call at all.
    host = _init_module_errno(lambda code: subprocess.run(["python3", "-c", code], capture_output=True, text=True).stdout)
    assert inside == (errno.ENOSYS if host == errno.ENOSYS else errno.EPERM), (inside, host)
    if os.path.exists("/sbin/insmod") or os.path.exists("/usr/sbin/insmod"):
        assert rt.run("insmod /tmp/nothing.ko", timeout=10).exit_code != 0


def test_host_home_task_store_project_and_other_runtimes_are_not_there(sandboxed, tmp_path, monkeypatch):
    home = Path.home()
    cache = Path(os.environ.get("OEC_CACHE_DIR") or home / ".cache" / "sweagent-oec")
    secrets_ = [home / f".oec_probe_{uuid.uuid4().hex}", cache / f"probe_{uuid.uuid4().hex}"]
    for path in secrets_:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HOST_SECRET)
    try:
        rt, other = sandboxed(), sandboxed()
        other.run("echo other-instance > /testbed/mine.txt", timeout=10)
        project = Path(sweagent_oec.__file__).resolve().parents[1]
        task_repo = tmp_path / "task0"  # the task store: the repo with the history that holds the fix
        hidden = [*secrets_, project / "README.md", project / "sweagent_oec" / "env" / "local.py", task_repo,
                  other.root / "repo" / "mine.txt", other.root, cache, home / ".cache"]
        for path in hidden:
            assert path.exists(), path
            seen = rt.run(f"ls -d {path} && cat {path}", timeout=10)
            assert seen.exit_code != 0 and "No such file or directory" in seen.output, (path, seen.output)
        # What is left of the host's $HOME is at most the path to the task venv's interpreter.
        listing = rt.run(f"ls -A {home}", timeout=10).output.split()
        assert set(listing) <= {".pyenv"}, listing
        found = rt.run(f"grep -rls {HOST_SECRET} / --exclude-dir=proc --exclude-dir=usr; echo searched", timeout=60)
        assert found.output == "searched\n"
        assert rt.run("cat /testbed/mine.txt", timeout=10).exit_code != 0
    finally:
        for path in secrets_:
            path.unlink()


def test_no_network_neither_loopback_nor_outside(sandboxed):
    rt = sandboxed()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        # Only a loopback interface, of its own: no route anywhere. Checked before any connect is tried.
        devices = rt.run("tail -n +3 /proc/net/dev | cut -d: -f1", timeout=10).output.split()
        assert devices == ["lo"]
        assert rt.run("cat /proc/net/route | tail -n +2", timeout=10).output.strip() == ""
        probe = ("import socket, sys\n"
                 "try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n print('connected')\n"
                 "except OSError as e:\n print('errno', e.errno)\n")
        rt.write_file("/tmp/probe.py", probe)
        local = rt.run(f"python3 /tmp/probe.py 127.0.0.1 {port}", timeout=15).output.split()
        assert local == ["errno", str(errno.ECONNREFUSED)]  # its own empty loopback, not the host's listener
        with pytest.raises(socket.timeout):
            server.accept()
        outside = rt.run("python3 /tmp/probe.py 192.0.2.1 80", timeout=15).output.split()  # TEST-NET-1
        assert outside == ["errno", str(errno.ENETUNREACH)]
    finally:
        server.close()


def test_no_process_environment_holds_the_launchers_secrets(sandboxed):
    rt = sandboxed()
    pids = rt.run("ls /proc | grep -E '^[0-9]+$'", timeout=10).output.split()
    assert len(pids) <= 6, pids  # its own pid namespace: bwrap's init, the shell, this command
    assert str(os.getpid()) not in pids or "pytest" not in rt.run(f"cat /proc/{os.getpid()}/cmdline", timeout=10).output
    for target in ["1", "$PPID", "$$", "self"]:  # pid 1 is bwrap's init (its environment may be empty)
        environ = rt.run(f"cat /proc/{target}/environ | tr '\\0' '\\n'", timeout=10)
        assert environ.exit_code == 0 and ("PATH=" in environ.output or target == "1"), target
        assert HOST_SECRET not in environ.output and "OPENAI_API_KEY" not in environ.output, target
    everything = rt.run("cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'", timeout=10)
    assert HOST_SECRET not in everything.output


def test_unconfined_session_parent_holds_no_secret(sandboxed):
    rt = sandboxed(sandbox="none")
    assert rt.info.sandbox == "none"
    parent = rt.run("tr '\\0' '\\n' < /proc/$PPID/environ; cat /proc/$PPID/comm", timeout=10)
    assert parent.exit_code == 0 and "PATH=" in parent.output
    assert HOST_SECRET not in parent.output and "OPENAI_API_KEY" not in parent.output
    assert HOST_SECRET not in rt.run("env", timeout=10).output
    # The launcher itself is not dumpable: a non-root process of the same user could not read its environ.
    assert _dumpable() == 0


def _dumpable() -> int:
    return ctypes.CDLL(None, use_errno=True).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE


def _host_is_responsive(seconds: float) -> float:
    """The slowest of repeated `true` starts on the host over `seconds`."""
    worst, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        subprocess.run(["true"])
        worst = max(worst, time.monotonic() - started)
        time.sleep(0.05)
    return worst


def test_a_fork_bomb_is_bounded_and_the_host_stays_responsive(sandboxed):
    rt = sandboxed(max_processes=64)
    _needs_cgroup(rt)
    assert rt.info.limits["max_processes"] == 64 and rt.info.limits["mechanism"].startswith("cgroup")
    rt.run("bomb() { bomb | bomb & }; bomb", timeout=10)
    assert _host_is_responsive(3.0) < 2.0  # a process start on the host stays quick (the machine may be busy)
    assert len(rt.cgroup.pids()) <= 64
    assert rt.cgroup.events()["forks_refused"] > 0  # the pids limit refused forks: that is what held it
    folders = list(rt.cgroup.dirs)
    started = time.monotonic()
    rt.close()
    assert time.monotonic() - started < 15
    assert not any(folder.exists() for folder in folders)  # emptied and removed: no process outlived it


def test_a_memory_hog_is_killed_inside_its_limit(sandboxed):
    rt = sandboxed(memory_limit="256m")
    _needs_cgroup(rt)
    assert rt.info.limits["memory_limit"] == 256 * 2**20
    hog = rt.run("python3 -c 'b = []\nwhile True: b.append(bytearray(32 * 2**20))'", timeout=60)
    assert hog.exit_code == 137 and "Killed" in hog.output  # SIGKILL from the OOM killer, inside the cgroup
    assert rt.cgroup.events()["oom_kills"] >= 1
    assert rt.run("echo alive", timeout=10).output == "alive\n"  # the session lives on


def test_forged_end_records_from_processes_are_ignored(sandboxed):
    rt = sandboxed()
    forger = (
        "import os, glob\n"
        "tried = 0\n"
        # What the old protocol printed, with every id the session shows, on stdout.
        "rid = os.environ.get('OEC_RUNTIME_ID', '')\n"
        "print(f'\\x1e__OEC_END_{rid}__0', flush=True)\n"
        "for n in range(0, 50):\n"
        "    record = f'R{n} 0\\nexport FORGED=1\\ncd -- /\\n\\0'.encode()\n"
        "    for path in glob.glob('/proc/*/fd/*'):\n"
        "        try:\n"
        "            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)\n"
        "            os.write(fd, record); os.close(fd); tried += 1\n"
        "        except OSError:\n"
        "            pass\n"
        "print('forger done', flush=True)\n")
    rt.write_file("/tmp/forger.py", forger)
    # A subshell holds the session's saved descriptors too: it tries them directly.
    result = rt.run("python3 /tmp/forger.py; ( for fd in 3 4 5 6 7 8 9 10 11 12 13 14 15; do "
                    "for n in $(seq 0 50); do printf 'R%d 0\\n\\0' $n >&$fd; done; done ) 2>/dev/null; "
                    "sleep 0.5; echo command end", timeout=30)
    assert result.exit_code == 0 and result.output.rstrip().endswith("forger done\ncommand end")
    for word in ("one", "two", "three"):  # still in step: each observation is its own command's
        assert rt.run(f"echo {word}; cd /tmp", timeout=10).output == f"{word}\n"
    assert rt.run('pwd; echo "${FORGED:-no}"', timeout=10).output.split() == ["/tmp", "no"]


def test_a_forged_record_from_the_shell_itself_cannot_desynchronise_later_commands(sandboxed):
    # The shell's own builtins write with its pid: a command may cut its own observation short this way,
    # but the real record that follows is stale and dropped, and the next command is back in step.
    rt = sandboxed()
    forged = rt.run("for fd in $(ls /proc/$$/fd); do builtin printf 'R%s 0\\n\\0' \"$__oec_seq\" >&$fd; done "
                    "2>/dev/null; sleep 0.3; echo late", timeout=10)
    assert "late" not in forged.output
    rt.run("sleep 0.5", timeout=10)
    assert rt.run("echo next", timeout=10).output == "next\n"
    assert rt.run("echo again", timeout=10).output == "again\n"


def test_limits_in_force_are_recorded(sandboxed):
    rt = sandboxed(max_processes=200, memory_limit="1g")
    _needs_cgroup(rt)
    limits = rt.info.as_dict()["limits"]
    assert limits == {"mechanism": limits["mechanism"], "max_processes": 200, "memory_limit": 2**30}
    assert limits["mechanism"].startswith("cgroup")
