"""The local runtime: a private copy of the task's repo and one persistent bash session in it.

The session is a single `bash` reading commands from a pipe; each command is eval'd and followed by
an end marker that carries its exit code, so a round trip costs well under a millisecond and `cd` /
`export` persist. With bubblewrap the host is read-only, the network is gone, the repo is at
/testbed (as in SWE-smith's images), /tmp and $HOME are private. See env/README.md for the contract.
"""

from __future__ import annotations

import array
import atexit
import ctypes
import logging
import os
import posixpath
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sweagent_oec.env.runtime import (
    secret_variable,
    EnvConfig,
    RuntimeError_,
    RuntimeInfo,
)
from sweagent_oec.env.limits import Cgroup, join_command, rlimit_commands
from sweagent_oec.env.session import SESSION_ENDED, TIMED_OUT, MarkerSession, OutputReader, refusal_functions
from sweagent_oec.errors import UserError

if TYPE_CHECKING:
    from sweagent_oec.tasks.instances import Instance

log = logging.getLogger(__name__)

#: Where the repo appears inside the bubblewrap sandbox (SWE-smith's images use the same path).
SANDBOX_WORKDIR = "/testbed"
#: The session's PATH after the task's venv: the usual system folders, nothing from the host's.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_GIT_IDENTITY = {"GIT_AUTHOR_NAME": "oec", "GIT_AUTHOR_EMAIL": "oec@localhost", "GIT_COMMITTER_NAME": "oec",
                 "GIT_COMMITTER_EMAIL": "oec@localhost", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
                 "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
_READ_SIZE = 1 << 16
#: Commands at least this long go to the shell through a file (its pipe reads are one byte at a time).
_LARGE_COMMAND = 1024
_COMMAND_FILE = "command"
#: Where the sandbox sees the folder of that file: read-only, so nothing inside can rewrite a command.
_COMMAND_DIR = "/run/oec-session"
#: After a timeout: how long SIGINT, then SIGKILL of the command's processes, get to end it.
_INTERRUPT_GRACE_S = 2.0
_KILL_GRACE_S = 1.0
#: What of the host the sandbox shows (read-only): the system's own folders, nothing else.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
#: Files under those folders that the sandbox hides (root without capabilities still owns them).
MASKED_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers")
MASKED_DIRS = ("/etc/ssh", "/etc/sudoers.d", "/etc/ssl/private")
#: /proc entries a root without capabilities could still write (sysctls such as kernel.core_pattern,
#: sysrq-trigger) are read-only; ones that tell of the host's kernel are hidden (as Docker does).
PROC_READONLY = ("sys", "sysrq-trigger", "fs", "bus", "irq")
PROC_MASKED_FILES = ("kcore", "keys", "timer_list", "sched_debug", "latency_stats", "kallsyms")
PROC_MASKED_DIRS = ("acpi", "scsi", "asound")
_INSTALL_HINT = ("install bubblewrap (apt-get install bubblewrap, dnf install bubblewrap), use env.type: docker, "
                 "or set env.sandbox: none to run the agent unconfined")

def _bash_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _git(repo: Path, *args: str, input: str | None = None) -> str:
    env = {"PATH": SYSTEM_PATH, "HOME": str(repo), "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "LANG": "C.UTF-8", **_GIT_IDENTITY}
    done = subprocess.run(["git", *args], cwd=repo, env=env, input=input, capture_output=True, text=True)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, ["git", *args], done.stdout, done.stderr)
    return done.stdout.strip()


def _commit_all(repo: Path, message: str, force: bool) -> None:
    _git(repo, "add", "-A", *(["-f"] if force else []))
    _git(repo, "commit", "-q", "--allow-empty", "--no-verify", "-m", message)


def build_task_state(instance: "Instance", dest: Path) -> None:
    """`dest` = the instance's base_commit with the bug patch applied, as a fresh one-commit repo.

    The history is dropped on purpose: the commit before the bug would show the agent the fix.
    """
    local = instance.local
    if local is None:
        raise UserError(f"instance {instance.instance_id} has no `local` section (repo_dir, venv, ...); "
                        "add one or use env.type: docker")
    if not instance.base_commit:
        raise UserError(f"instance {instance.instance_id} has no base_commit; set it to a commit of {local.repo_dir}")
    if not (Path(local.repo_dir) / ".git").exists():
        raise UserError(f"instance {instance.instance_id}: local.repo_dir {local.repo_dir} is not a git repository")
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", local.repo_dir, "archive", "--format=tar", instance.base_commit],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True)
    archive.stdout.close()
    archive_err = archive.stderr.read().decode(errors="replace").strip()
    if archive.wait() != 0 or untar.returncode != 0:
        raise UserError(f"instance {instance.instance_id}: cannot check out base_commit {instance.base_commit} of "
                        f"{local.repo_dir}: {archive_err or untar.stderr.decode(errors='replace').strip()}")
    _git(dest, "-c", "init.defaultBranch=main", "init", "-q")
    if instance.patch.strip():
        try:
            _git(dest, "apply", "--whitespace=nowarn", "-", input=instance.patch)
        except subprocess.CalledProcessError as e:
            raise UserError(f"instance {instance.instance_id}: its patch does not apply to base_commit "
                            f"{instance.base_commit}: {e.stderr.strip().splitlines()[0] if e.stderr.strip() else e}") from None
    # -f: after an export there are no untracked files, so "ignored" ones were tracked upstream.
    _commit_all(dest, f"task state of {instance.instance_id}", force=True)


def copy_folder_state(folder: Path, dest: Path) -> None:
    """`dest` = a copy of `folder`; a folder that is not a git repo (or has no commit) gets one commit."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give the repository's root folder")
    shutil.copytree(folder, dest, symlinks=True)
    if not (dest / ".git").exists():
        _git(dest, "-c", "init.defaultBranch=main", "init", "-q")
    try:
        _git(dest, "rev-parse", "--verify", "-q", "HEAD")
    except subprocess.CalledProcessError:
        _commit_all(dest, "initial state", force=False)


# ---------------------------------------------------------------- process tree helpers


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return found


def _descendants(pid: int) -> list[int]:
    out, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(_children(child))
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pids_with_env(marker: bytes) -> list[int]:
    """Processes whose environment holds `marker`: they came from this runtime's session."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        found.append(int(name))
            except OSError:
                continue
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


# ---------------------------------------------------------------- the runtime

_spawn_thread: ThreadPoolExecutor | None = None
_spawn_lock = threading.Lock()


def _spawner() -> ThreadPoolExecutor:
    """One thread that lives as long as the process starts every session.

    bwrap's --die-with-parent follows the *thread* that started it: a session started from a worker
    thread would be killed when that thread ends, though the runtime is still in use.
    """
    global _spawn_thread
    with _spawn_lock:
        if _spawn_thread is None:
            _spawn_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oec-session-spawner")
        return _spawn_thread


_live_runtimes: "weakref.WeakSet[LocalRuntime]" = weakref.WeakSet()


@atexit.register
def _close_live_runtimes() -> None:
    for runtime in list(_live_runtimes):
        runtime.close()


_bwrap_checked: dict[str, str | None] = {}


def _choose_sandbox(config: EnvConfig) -> tuple[str | None, str | None]:
    """(path of bwrap or None, note for RuntimeInfo when unconfined). Never unconfined unless asked."""
    if config.sandbox == "none":
        return None, ("sandbox disabled (env.sandbox: none): commands run unconfined, with this user's files, "
                      "processes and network")
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise UserError(f"the local runtime confines the agent with bubblewrap, which is not installed: {_INSTALL_HINT}")
    with _spawn_lock:
        if bwrap not in _bwrap_checked:
            # Once per process: the kernel may forbid what the sandbox needs (namespaces for this user).
            probe = subprocess.run([bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
                                    "--unshare-ipc", "--unshare-uts", "--unshare-net", "--new-session", "--cap-drop", "ALL",
                                    "--", "true"], capture_output=True, text=True, env={"PATH": SYSTEM_PATH})
            _bwrap_checked[bwrap] = None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["?"])[-1]
    if _bwrap_checked[bwrap] is not None:
        raise UserError(f"bubblewrap cannot build the sandbox here ({_bwrap_checked[bwrap]}): {_INSTALL_HINT}")
    return bwrap, None


def _make_undumpable() -> None:
    """Unconfined sessions: other processes of this (non-root) user can no longer read this process's
    environment or memory (/proc/<pid>/environ, mem); root keeps that power (see env/README.md)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except (OSError, AttributeError):
        log.warning("could not mark the launcher non-dumpable: unconfined sessions may read its environment")


def _base_interpreter(venv: str) -> str | None:
    """The Python installation a venv's interpreter links to, from pyvenv.cfg's `home` (None: a system one)."""
    try:
        for line in Path(venv, "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                prefix = str(Path(value.strip()).parent)
                top = prefix.strip("/").split("/")[0]
                return None if top in SYSTEM_DIRS or prefix == "/" else prefix
    except OSError:
        pass
    return None


class _ChannelReader(OutputReader):
    """The local session's reader: output is plain bytes (no marker to look for in it); the exit code
    and state come over the control channel, so nothing the command prints can end it."""

    def feed_output(self, chunk: bytes) -> None:
        self._keep(chunk)

    def finish(self, exit_code: int, state: bytes) -> None:
        self.exit_code, self.state = exit_code, state


class LocalRuntime(MarkerSession):
    #: A local task state keeps its test files (the bug patch does not remove them).
    test_source: tuple[str, str] | None = None
    reader_class = _ChannelReader

    """A private working copy plus a persistent bash session in it (implements `Runtime`).

    `LocalRuntime(folder)` works on a copy of any folder; `from_instance` builds the task state.
    The tools (`tools/bin`) are installed and on PATH when the constructor returns.
    """

    def __init__(self, folder: str | Path, config: EnvConfig | None = None, *,
                 env: dict[str, str] | None = None, venv: str | None = None):
        self._open(config or EnvConfig(), lambda repo: copy_folder_state(Path(folder), repo), env or {}, venv)

    @classmethod
    def from_instance(cls, instance: "Instance", config: EnvConfig) -> "LocalRuntime":
        """The instance's task state (base_commit + bug, committed) with cwd at the repo root."""
        if instance.local is None:
            raise UserError(f"instance {instance.instance_id} has no `local` section (repo_dir, venv, ...); "
                            "add one or use env.type: docker")
        self = cls.__new__(cls)
        self._open(config, lambda repo: build_task_state(instance, repo), dict(instance.local.env), instance.local.venv)
        return self

    # ---- start-up

    def _open(self, config: EnvConfig, prepare: Callable[[Path], None], task_env: dict[str, str], venv: str | None):
        self.config = config
        self._proc: subprocess.Popen | None = None
        self._closed = False
        self._leftover = b""
        self.cgroup: Cgroup | None = None
        self._bwrap, unconfined_note = _choose_sandbox(config)
        self._venv = str(Path(venv).absolute()) if venv else None
        if venv and not Path(venv, "bin").is_dir():
            raise UserError(f"venv {venv} has no bin/ folder; build it (local.install_cmd) or fix local.venv")
        if not self._bwrap:
            _make_undumpable()
        self._root = Path(tempfile.mkdtemp(prefix="oec-runtime-"))
        self._repo, self._tmp = self._root / "repo", self._root / "tmp"
        self._id = uuid.uuid4().hex
        _live_runtimes.add(self)
        try:
            prepare(self._repo)
            self.base_commit = _git(self._repo, "rev-parse", "HEAD")
            workdir = SANDBOX_WORKDIR if self._bwrap else str(self._repo)
            shell_tmp = "/tmp" if self._bwrap else str(self._tmp)
            self.info = RuntimeInfo(type="local", sandbox="bwrap" if self._bwrap else "none", workdir=workdir,
                                    notes=[unconfined_note] if unconfined_note else [])
            self.cgroup = Cgroup.create(self._id, config.max_processes, config.memory_bytes)
            self._rlimits: list[str] = []
            if self.cgroup is not None:
                self.info.limits = self.cgroup.describe()
            else:
                self._rlimits, self.info.limits = rlimit_commands(config.max_processes, config.memory_bytes)
                self.info.notes.append("no writable cgroup: limits are rlimits (memory per process; processes per uid, "
                                       "never for root)")
            # Agent path prefix -> host folder, for write_file/read_file.
            self._mounts = [(SANDBOX_WORKDIR, self._repo), ("/tmp", self._tmp)] if self._bwrap else []
            (self._tmp / "home").mkdir(parents=True)
            (self._tmp / "home" / ".gitconfig").write_text(
                "[user]\n\tname = oec\n\temail = oec@localhost\n[core]\n\tpager = cat\n[safe]\n\tdirectory = *\n")
            self._mark = b""  # unused: the end of a command comes over the control channel
            self._seq = 0
            self._saved_state = ""
            (self._root / "cmd").mkdir(mode=0o700)
            self._command_file = f"{_COMMAND_DIR if self._bwrap else self._root / 'cmd'}/{_COMMAND_FILE}"
            self._env = self._session_env(workdir, shell_tmp, venv, task_env)
            self._start_session()
            self._prepare(config)
        except BaseException:
            self.close()
            raise

    def _session_env(self, workdir: str, shell_tmp: str, venv: str | None, task_env: dict[str, str]) -> dict[str, str]:
        """Built from scratch, so nothing of the host's environment (keys, tokens) leaks in."""
        env = {
            "PATH": (f"{venv}/bin:" if venv else "") + SYSTEM_PATH,
            "HOME": f"{shell_tmp}/home", "TMPDIR": shell_tmp, "USER": "root" if os.getuid() == 0 else "agent",
            "LANG": "C.UTF-8", "TERM": "dumb", "PAGER": "cat", "GIT_PAGER": "cat", "MANPAGER": "cat",
            # An editor that exits at once: `git commit` without -m aborts instead of waiting.
            "EDITOR": "true", "VISUAL": "true", "GIT_EDITOR": "true", "GIT_TERMINAL_PROMPT": "0",
            "PIP_NO_INPUT": "1", "PYTHONUNBUFFERED": "1", "DEBIAN_FRONTEND": "noninteractive",
            "OEC_RUNTIME_ID": self._id,
        }
        if venv:
            env["VIRTUAL_ENV"] = venv
        for key, value in {**task_env, **self.config.env_variables}.items():
            if secret_variable(key, value):
                log.warning("not passing %s into the agent's session: secrets never reach it", key)
                continue
            if key == "PYTHONPATH":
                value = ":".join(p if p.startswith("/") else posixpath.normpath(posixpath.join(workdir, p))
                                 for p in value.split(":") if p)
            env[key] = value
        return env

    def _command_line(self, control_fd: int) -> list[str]:
        # The session's loop: read a sequence number and a NUL-terminated command from the control socket,
        # eval it (a syntax error cannot leave the parser waiting; error lines count from the command's own
        # first line, as in `bash -c`), then write the sequence number, the exit code and the state (exports
        # and cwd) a restart restores back to the socket. The command runs with the socket closed, so no
        # program it starts holds it (and a socket, unlike a pipe, cannot be reopened through /proc); the host
        # takes a record only from the shell's own pid (the kernel stamps each write with it), and only with
        # the current sequence number. Commands too big for bash's byte-at-a-time reads come through a file
        # in a folder the sandbox sees read-only. All on one line, so that line numbers in bash's messages
        # are the command's own.
        loop = (f"__oec_x=; "
                f"while IFS= read -r -d '' __oec_seq <&{control_fd} && IFS= read -r -d '' __oec_cmd <&{control_fd}; do "
                f"if [ \"$__oec_cmd\" = __oec_from_file ]; then IFS= read -r -d '' __oec_cmd < {self._command_file}; fi; "
                # `break`/`continue` stay in the one-pass for; the agent's `set -x` covers its command only.
                "for __oec_once in 1; do eval \"${__oec_x:+set -x; }$__oec_cmd\"; "
                f"done {control_fd}<&-; "
                "{ __oec_rc=$?; __oec_x=${-//[^x]/}; set +x; } 2>/dev/null; "
                "{ builtin printf 'R%s %d\\n' \"$__oec_seq\" \"$__oec_rc\"; builtin export -p; "
                f"builtin printf 'cd -- %q\\n\\0' \"$PWD\"; }} >&{control_fd}; done")
        bash = ["bash", "--noprofile", "--norc", "-c", loop, "bash"]
        if not self._bwrap:
            return join_command(self.cgroup, self._rlimits, bash, exec_=False)
        # A fresh root holding only the system's folders (read-only), the repo copy, a private /tmp (with $HOME),
        # and the task's venv and its interpreter (read-only): no host $HOME, caches, task store or project.
        args = [self._bwrap, "--tmpfs", "/"]
        for name in SYSTEM_DIRS:
            path = f"/{name}"
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        args += [arg for path in MASKED_FILES if os.path.isfile(path) for arg in ("--ro-bind", "/dev/null", path)]
        args += [arg for path in MASKED_DIRS if os.path.isdir(path) for arg in ("--tmpfs", path)]
        args += ["--dev", "/dev", "--proc", "/proc"]
        for name in PROC_READONLY:
            if os.path.exists(f"/proc/{name}"):
                args += ["--ro-bind", f"/proc/{name}", f"/proc/{name}"]
        args += [arg for name in PROC_MASKED_FILES if os.path.isfile(f"/proc/{name}")
                 for arg in ("--ro-bind", "/dev/null", f"/proc/{name}")]
        args += [arg for name in PROC_MASKED_DIRS if os.path.isdir(f"/proc/{name}") for arg in ("--tmpfs", f"/proc/{name}")]
        args += ["--bind", str(self._tmp), "/tmp",
                 "--bind", str(self._repo), SANDBOX_WORKDIR, "--ro-bind", str(self._root / "cmd"), _COMMAND_DIR]
        if self._venv:  # it may live under the host's /tmp or $HOME, which the sandbox does not show
            args += ["--ro-bind", self._venv, self._venv]
            base = _base_interpreter(self._venv)
            if base and os.path.isdir(base):
                args += ["--ro-bind", base, base]
        args += ["--remount-ro", "/",
                 "--unshare-user-try", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "sandbox",
                 "--unshare-cgroup-try",
                 "--new-session", "--die-with-parent", "--cap-drop", "ALL", "--chdir", SANDBOX_WORKDIR]
        if not self.config.network:
            args.append("--unshare-net")
        return join_command(self.cgroup, self._rlimits, [*args, "--", *bash], exec_=True)

    def _start_session(self) -> None:
        # Commands come in on their own pipe; stdin is /dev/null, so nothing the agent runs can wait on input
        # or swallow the next command. The end of each command comes back over a socket that tells whose
        # process wrote to it.
        self._ctl, control = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._ctl.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._ctl.setblocking(False)
        self._ctl_buf = b""
        self._shell_host_pid: int | None = None
        try:
            self._proc = _spawner().submit(
                subprocess.Popen, self._command_line(control.fileno()), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(control.fileno(),), env=self._env,
                cwd=self._repo, start_new_session=True,
            ).result()
        finally:
            control.close()
        self._out_fd = self._proc.stdout.fileno()
        os.set_blocking(self._out_fd, False)
        self._poll = select.poll()
        self._poll.register(self._out_fd, select.POLLIN)
        self._poll.register(self._ctl.fileno(), select.POLLIN)
        setup = refusal_functions() + f"cd -- {_bash_quote(self.info.workdir)}\n"
        result = self._exchange(setup, time.monotonic() + 30)
        if result.exit_code != 0:
            raise RuntimeError_(f"the local bash session did not start: {result.output.strip()[-500:]}")

    # ---- running commands

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def root(self) -> Path:
        """The runtime's private folder on the host (repo/, tmp/, cmd/); deleted by close()."""
        return self._root

    def _send_command(self, command: str, reader: OutputReader, deadline: float | None):
        command = command.replace("\0", "")  # NUL ends a command on the pipe; bash strings cannot hold it anyway
        self._seq += 1
        if len(command) < _LARGE_COMMAND:
            payload = f"{self._seq}\0{command}\0".encode()
        else:
            # Overwritten in place, NUL-terminated, never truncated: freeing blocks costs ms on some disks.
            fd = os.open(self._root / "cmd" / _COMMAND_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, command.encode() + b"\0", 0)
            finally:
                os.close(fd)
            payload = f"{self._seq}\0__oec_from_file\0".encode()
        return self._pump(payload, reader, deadline)

    def _ended_exit_code(self) -> int | None:
        try:
            return self._proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return None

    def _read_output(self, reader: "OutputReader") -> bool:
        """Take what the output pipe holds now; False at its end."""
        while True:
            try:
                chunk = os.read(self._out_fd, _READ_SIZE)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            reader.feed_output(chunk)

    def _read_control(self) -> tuple[int, bytes] | bool:
        """(exit code, state) once the shell's record of the current command is complete; False at the
        socket's end; True otherwise. Bytes from any other process, and stale records, are dropped."""
        while True:
            try:
                data, ancillary, _, _ = self._ctl.recvmsg(_READ_SIZE, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            sender = next((array.array("i", raw[:12])[0] for level, kind, raw in ancillary
                           if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None)
            if self._shell_host_pid is None:
                self._shell_host_pid = sender  # the first record, before any command ran, comes from the shell
            if sender != self._shell_host_pid:
                log.warning("dropped %d bytes written to the session's control channel by pid %s, not its shell",
                            len(data), sender)
                continue
            self._ctl_buf += data
            while b"\0" in self._ctl_buf:
                record, self._ctl_buf = self._ctl_buf.split(b"\0", 1)
                head, _, state = record.partition(b"\n")
                seq, _, rc = head[1:].partition(b" ")
                if head.startswith(b"R") and seq == str(self._seq).encode():
                    return int(rc or b"-1"), state
                log.warning("dropped a stale or malformed control record: %r", head[:80])

    def _pump(self, payload: bytes, reader: "OutputReader", deadline: float | None):
        """Send `payload` to the shell and read its output until its control record, its end, or the deadline."""
        pending, ctl = memoryview(payload), self._ctl.fileno()
        if pending:
            self._poll.modify(ctl, select.POLLIN | select.POLLOUT)
        try:
            while True:
                wait_ms = 500 if deadline is None else max(0, min(500, int((deadline - time.monotonic()) * 1000) + 1))
                events = self._poll.poll(wait_ms)
                for fd, event in events:
                    if fd == self._out_fd:
                        if not self._read_output(reader):
                            self._poll.unregister(self._out_fd)  # the shell closed its output (exec >&-)
                        continue
                    if pending and event & select.POLLOUT:
                        try:
                            pending = pending[self._ctl.send(pending):]
                        except BlockingIOError:
                            pass
                        except OSError:
                            return SESSION_ENDED
                        if not pending:
                            self._poll.modify(ctl, select.POLLIN)
                    if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        done = self._read_control()
                        if done is False:
                            return SESSION_ENDED
                        if done is not True:
                            # Everything the command's processes wrote is in the pipe by now: take it.
                            self._read_output(reader)
                            reader.finish(*done)
                            return reader.exit_code
                # Checked on every pass: a command that never stops printing must still time out.
                if deadline is not None and time.monotonic() >= deadline:
                    return TIMED_OUT
                if not events and self._proc.poll() is not None:
                    return SESSION_ENDED
        finally:
            if pending:
                self._poll.modify(ctl, select.POLLIN)

    def _shell_pid(self) -> int | None:
        """Host pid of the session's bash (the sender of its first control record)."""
        pid = self._shell_host_pid
        return pid if pid is not None and _comm(pid) == "bash" else None

    def _interrupt(self, reader: OutputReader) -> bool:
        """Ctrl-C the running command (SIGINT to the shell's children), then SIGKILL them; keep the shell."""
        shell = self._shell_pid()
        if shell is None:
            return False
        for sig, grace in ((signal.SIGINT, _INTERRUPT_GRACE_S), (signal.SIGKILL, _KILL_GRACE_S)):
            running = _descendants(shell)
            if not running:  # the shell itself is busy (a builtin loop): only a restart ends that
                return False
            _signal_all(running, sig)
            if self._pump(b"", reader, time.monotonic() + grace) not in (TIMED_OUT, SESSION_ENDED):
                return True
        return False

    # ---- files, as the agent sees them

    def _host_path(self, path: str, writing: bool) -> Path:
        agent_path = posixpath.normpath(posixpath.join(self.info.workdir, path))
        for prefix, host in self._mounts:
            if agent_path == prefix or agent_path.startswith(prefix + "/"):
                target = Path(str(host) + agent_path[len(prefix):])
                # A symlink the agent made must not lead a host-side read or write out of the sandbox.
                if not os.path.realpath(target).startswith(str(self._root) + "/"):
                    raise PermissionError(f"{path} resolves outside the sandbox's private folders")
                return target
        if self._bwrap and writing:
            raise PermissionError(f"{path} is outside the sandbox's writable folders ({SANDBOX_WORKDIR}, /tmp)")
        real = os.path.realpath(agent_path)
        if self._bwrap and (real.strip("/").split("/")[0] not in SYSTEM_DIRS or real in MASKED_FILES
                            or any(real.startswith(folder + "/") for folder in MASKED_DIRS)):
            raise PermissionError(f"{path} is not visible in the sandbox")
        # Unconfined, or a read of the system's folders the sandbox shows read-only: the host's own.
        return Path(agent_path)

    def write_file(self, path: str, content: str) -> None:
        target = self._host_path(path, writing=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)

    def read_file(self, path: str) -> str:
        return self._host_path(path, writing=False).read_text(errors="replace")

    # ---- shutdown

    def _stop_session(self) -> None:
        if self._proc is None:
            return
        # Everything this session started: its cgroup (which nothing inside can leave), else its tree, its
        # process group, and strays that left both (double forks, setsid) but still carry OEC_RUNTIME_ID.
        if self.cgroup is not None:
            self.cgroup.kill()
        victims = [self._proc.pid, *_descendants(self._proc.pid)]
        if self.cgroup is None:
            victims += _pids_with_env(f"OEC_RUNTIME_ID={self._id}".encode())
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except OSError:
            pass
        _signal_all(victims, signal.SIGKILL)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("the session's shell (pid %s) did not exit after SIGKILL", self._proc.pid)
        self._proc.stdout.close()
        self._ctl.close()
        self._proc = None

    def close(self) -> None:
        """Kill every process the session started and delete the private copy; idempotent."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        _live_runtimes.discard(self)
        try:
            self._stop_session()
        finally:
            if self.cgroup is not None:
                self.cgroup.remove()
            shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> "LocalRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


