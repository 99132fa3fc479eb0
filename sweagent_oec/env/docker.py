"""The docker runtime: a SWE-smith image started through the docker SDK, with a persistent bash in it.

Works with any engine that speaks the Docker API (Docker; podman's `system service`, see
scripts/setup_podman.sh). The session is one `bash` exec whose stdin and stdout are the exec's
socket; it speaks the same protocol as the local runtime's (a command, an end marker with the exit
code, then the shell's exports and cwd), so both behave alike: see env/README.md.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import posixpath
import re
import secrets
import select
import tarfile
import time
import weakref

import docker
import docker.errors

from sweagent_oec.env.session import SESSION_ENDED, TIMED_OUT, MarkerSession, OutputReader, refusal_functions
from sweagent_oec.env.runtime import SOURCE_GIT_DIR, EnvConfig, RuntimeError_, RuntimeInfo, secret_variable
from sweagent_oec.errors import UserError
from sweagent_oec.tasks.instances import Instance

log = logging.getLogger(__name__)

#: Where SWE-smith's images keep the repo.
WORKDIR = "/testbed"
#: After a timeout: how long SIGINT, then SIGKILL of the command's processes, get to end it.
INTERRUPT_GRACE_S = 2.0
KILL_GRACE_S = 1.0
_READ_SIZE = 1 << 16
#: Commands longer than this (characters) are handed to the session through a file.
_INLINE_LIMIT = 16_384

# Exported in the session: no pager or editor waits for a terminal that is not there.
_SESSION_ENV = {
    "TERM": "dumb", "PAGER": "cat", "GIT_PAGER": "cat", "MANPAGER": "cat", "EDITOR": "true", "VISUAL": "true",
    "GIT_EDITOR": "true", "GIT_TERMINAL_PROMPT": "0", "PIP_NO_INPUT": "1", "PYTHONUNBUFFERED": "1",
    "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8",
}
# SWE-smith (and SWE-bench) images keep the project's environment in conda env `testbed`, which
# their ~/.bashrc activates for interactive shells only; this session is not interactive.
_ACTIVATE_TESTBED = ("if [ -f /opt/miniconda3/etc/profile.d/conda.sh ]; then . /opt/miniconda3/etc/profile.d/conda.sh "
                     "&& conda activate testbed >/dev/null 2>&1; fi")
# Run beside the session: send signal $1 to every descendant of the shell $2 (not the shell).
_SIGNAL_DESCENDANTS = ('desc() { local c; for c in $(cat /proc/$1/task/*/children 2>/dev/null); do echo $c; desc $c; done; }; '
                       'pids=$(desc $2); [ -z "$pids" ] || kill -$1 $pids 2>/dev/null; true')

_SWESMITH_REPO = re.compile(r"(?P<owner>[^/]+?)__(?P<name>[^/]+)\.(?P<commit>[0-9a-fA-F]{8})")

_live: "weakref.WeakSet[DockerRuntime]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # No container outlives the interpreter, whatever way it exits (short of SIGKILL).
    for runtime in list(_live):
        runtime.close()


def swesmith_image_name(repo: str) -> str | None:
    """SWE-smith's image for a repo `[swesmith/]owner__name.commit8`; None for other repo names."""
    m = _SWESMITH_REPO.fullmatch(repo.removeprefix("swesmith/"))
    if not m:
        return None
    return f"swebench/swesmith.x86_64.{m['owner']}_1776_{m['name']}.{m['commit']}".lower()


def image_candidates(instance: Instance, config: EnvConfig) -> list[str]:
    """Images to try, best first: the config's alone if set; else SWE-smith's current name for the
    repo, then the instance's own `image_name` (SWE-smith's datasets carry an older naming there)."""
    if config.image_name:
        return [config.image_name]
    names = [swesmith_image_name(instance.repo), instance.image_name]
    return list(dict.fromkeys(n for n in names if n))


def connect(docker_host: str | None = None) -> docker.DockerClient:
    """A client for `docker_host`, else DOCKER_HOST or the default socket; UserError when none answers."""
    where = docker_host or os.environ.get("DOCKER_HOST") or "the default Docker socket"
    try:
        client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"no Docker engine answers at {where} ({reason}); start Docker, or run scripts/setup_podman.sh "
                        "and set DOCKER_HOST or env.docker_host to the socket it prints") from None
    return client


def present_image(client: docker.DockerClient, candidates: list[str]) -> str | None:
    """The first candidate the engine already has."""
    for name in candidates:
        try:
            client.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            continue
    return None


def find_image(client: docker.DockerClient, candidates: list[str]) -> str:
    """The first candidate the engine has, else the first one pulled; UserError when neither works."""
    if not candidates:
        raise UserError("no image for this instance: its repo is not SWE-smith's owner__name.commit8 and it has no "
                        "image_name; set env.image_name")
    have = present_image(client, candidates)
    if have is not None:
        return have
    try:
        from sweagent_oec.env.images import pull

        log.info("pulling %s (not in the engine; `sweagent-oec images pull` fetches a batch's images up front)", candidates[0])
        started = time.monotonic()
        pull(client, candidates[0])
        log.info("pulled %s in %.0fs", candidates[0], time.monotonic() - started)
        return candidates[0]
    except docker.errors.DockerException as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"image {candidates[0]} is not in the engine and could not be pulled ({reason}); pull or build "
                        f"it, or set env.image_name (tried: {', '.join(candidates)})") from None


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class DockerRuntime(MarkerSession):
    """One container of an image with the repo at /testbed, and one bash session in it (a `Runtime`).

    `DockerRuntime(client, image, config)` starts the container and the session;
    `from_instance` also checks out the task state and installs the tools.
    """

    def __init__(self, client: docker.DockerClient, image: str, config: EnvConfig | None = None, *, name: str = "task"):
        self.config = config = config or EnvConfig(type="docker")
        self.client, self.image = client, image
        self.base_commit: str | None = None
        self.test_source: tuple[str, str] | None = None  # set by _check_out when keep_source_git
        self.info = RuntimeInfo(type="docker", sandbox="container", workdir=WORKDIR, notes=[f"image {image}"])
        self._container = None
        self._sock = None
        self._exec_id: str | None = None
        self._shell_pid = "0"
        self._frames = b""  # socket bytes not yet cut into frames
        self._leftover = b""  # session output after the last command's end marker
        self._saved_state = ""
        self._mark = f"\x1e__OEC_END_{secrets.token_hex(16)}__".encode()
        _live.add(self)
        # Only what the config names goes in, minus anything named like a secret: never the host's environment.
        env = {}
        for key, value in config.env_variables.items():
            if secret_variable(key, value):
                log.warning("not passing %s into the container: secrets never reach the agent's session", key)
            else:
                env[key] = value
        try:
            self._container = client.containers.run(
                image, ["sleep", "infinity"], detach=True, name=f"oec-{re.sub(r'[^a-zA-Z0-9_.-]', '-', name)[:60]}-"
                f"{secrets.token_hex(4)}", labels={"sweagent-oec": "1"}, environment=env,
                network_mode=None if config.network else "none", working_dir=WORKDIR,
                # Limits the engine enforces (root in the container included); no added capabilities.
                privileged=False, pids_limit=config.max_processes or -1, mem_limit=config.memory_bytes or 0,
                memswap_limit=config.memory_bytes or 0)
            self.info.limits = {"mechanism": "docker", "max_processes": config.max_processes,
                                "memory_limit": config.memory_bytes}
            self._start_session()
        except docker.errors.DockerException as e:
            self.close()
            raise RuntimeError_(f"could not start a container of {image}: {str(e)[:300]}") from None
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_instance(cls, instance: Instance, config: EnvConfig) -> "DockerRuntime":
        """A started runtime at the instance's task state (one commit), tools installed, cwd /testbed."""
        client = connect(config.docker_host)
        runtime = cls(client, find_image(client, image_candidates(instance, config)), config, name=instance.instance_id)
        try:
            runtime.base_commit = runtime._check_out(instance)
            runtime._prepare(config)
        except BaseException:
            runtime.close()
            raise
        return runtime

    def _check_out(self, instance: Instance) -> str:
        """SWE-smith's task state (the instance's branch; else base_commit + patch), as a one-commit repo.

        The history goes, as in the local runtime: the commit before the bug would show the fix.
        """
        branch, patch_file = instance.instance_id, "/tmp/oec-instance.patch"
        if self.run(f"git rev-parse -q --verify refs/heads/{_quote(branch)}", timeout=60).exit_code == 0:
            self._must(f"git checkout -q -f {_quote(branch)}")
            # The branch's parent still has the tests its last commit may have removed (SWE-smith's layout).
            source_ref = self.run("git rev-parse -q --verify HEAD~1", timeout=60).output.strip() or None
        else:
            source_ref = instance.base_commit
            base = instance.base_commit
            if base and self.run(f"git cat-file -e {_quote(base + '^{commit}')}", timeout=60).exit_code == 0:
                self._must(f"git checkout -q -f {_quote(base)}")
            else:
                self.info.notes.append(f"base_commit {base} is not in the image: the patch went onto the image's HEAD")
            if instance.patch.strip():
                self.write_file(patch_file, instance.patch)
                applied = self.run(f"git apply --whitespace=nowarn {patch_file}", timeout=300)
                if applied.exit_code != 0:
                    raise UserError(f"instance {instance.instance_id}: its patch does not apply in {self.image}: "
                                    f"{(applied.output.strip().splitlines() or [''])[0]}")
                self._must(f"rm -f {patch_file}")
            self.info.notes.append(f"no branch {branch} in the image: the task state is base_commit"
                                   + (" with the instance's patch applied" if instance.patch.strip() else " (nothing injected)"))
        if self.config.keep_source_git and source_ref:
            self._must(f"rm -rf {SOURCE_GIT_DIR} && mv .git {SOURCE_GIT_DIR}")
            self.test_source = (SOURCE_GIT_DIR, source_ref)
        else:
            self._must("rm -rf .git")
        self._must(f"git -c init.defaultBranch=main init -q && git add -A && git commit -q --no-verify -m {_quote('task state of ' + branch)}")
        return self._must("git rev-parse HEAD").strip()

    def _must(self, command: str) -> str:
        result = self.run(command, timeout=300)
        if result.exit_code != 0:
            raise RuntimeError_(f"`{command}` failed in the container (exit {result.exit_code}): {result.output.strip()[-500:]}")
        return result.output

    # ------------------------------------------------------------------ the session

    def _start_session(self) -> None:
        api = self.client.api
        self._exec_id = api.exec_create(self._container.id, ["bash", "--noprofile", "--norc"], stdin=True, tty=False,
                                        workdir=WORKDIR)["Id"]
        self._sock = api.exec_start(self._exec_id, socket=True)
        self._frames = self._leftover = b""
        exports = " ".join(f"{k}={_quote(v)}" for k, v in _SESSION_ENV.items())
        setup = (f"exec 2>&1\n{refusal_functions()}export {exports}\n{_ACTIVATE_TESTBED}\n"
                 "git config --global user.name oec; git config --global user.email oec@localhost\n"
                 f"cd {WORKDIR}\necho $$")
        started = self._exchange(setup, time.monotonic() + 60)
        if started.exit_code != 0:
            raise RuntimeError_(f"the bash session in the container did not start: {started.output.strip()[-500:]}")
        self._shell_pid = started.output.strip().splitlines()[-1]

    @property
    def closed(self) -> bool:
        return self._container is None

    def _send_command(self, command: str, reader: OutputReader, deadline: float | None):
        # The command as one quoted word, eval'd: a syntax error cannot leave the parser waiting, and
        # stdin is /dev/null because the session's stdin is its command channel. After the exit code
        # comes the shell's state (exports, cwd): what a restarted session is put back to. The end marker is
        # new for every command and sits unread in the session's input until the command is over, so a
        # program the command runs cannot know it (nor find an earlier one in the shell's memory).
        self._mark = reader.mark = f"\x1e__OEC_END_{secrets.token_hex(16)}__".encode()
        mark = self._mark.decode()
        load = f"__oec_cmd={_quote(command)}"
        if len(command) > _INLINE_LIMIT:
            # bash reads its stdin one byte at a time (~1.7 s per MB here): big commands go by file.
            path = f"/tmp/.oec_cmd_{secrets.token_hex(8)}"
            self.write_file(path, command)
            load = f"__oec_cmd=$(< {path}); rm -f {path}"
        payload = (f"{load}\neval \"$__oec_cmd\" < /dev/null\n"
                   f"__oec_rc=$?; printf '{mark}%d\\n' \"$__oec_rc\"; export -p; printf 'cd -- %q\\n{mark}\\n' \"$PWD\"\n")
        self._sock_send(payload.encode())
        return self._pump(reader, deadline)

    def _ended_exit_code(self) -> int | None:
        return self._exit_code()

    def _pump(self, reader: OutputReader, deadline: float | None):
        """Read the session until the reader has the end marker and state, the session ends, or the deadline."""
        sock = self._raw_socket()
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([sock], [], [], wait)[0]:
                return TIMED_OUT
            data = sock.recv(_READ_SIZE)
            if not data:
                return SESSION_ENDED
            self._frames += data
            # A non-tty exec's output is multiplexed: 8-byte header (stream, 0, 0, 0, size), then the payload.
            while len(self._frames) >= 8:
                size = int.from_bytes(self._frames[4:8], "big")
                if len(self._frames) < 8 + size:
                    break
                payload, self._frames = self._frames[8:8 + size], self._frames[8 + size:]
                if reader.feed(payload):
                    return reader.exit_code

    def _interrupt(self, reader: OutputReader) -> bool:
        """Ctrl-C the running command (SIGINT to the shell's descendants), then SIGKILL them; keep the shell."""
        for sig, grace in (("INT", INTERRUPT_GRACE_S), ("KILL", KILL_GRACE_S)):
            self._beside(["bash", "-c", _SIGNAL_DESCENDANTS, "signal", sig, self._shell_pid])
            if self._pump(reader, time.monotonic() + grace) not in (TIMED_OUT, SESSION_ENDED):
                return True
        return False

    def _stop_session(self) -> None:
        """Kill the shell and everything it started (background jobs included), and drop its socket."""
        if self._container is not None and self._shell_pid != "0":
            self._beside(["bash", "-c", _SIGNAL_DESCENDANTS + f"; kill -KILL {self._shell_pid} 2>/dev/null; true",
                          "signal", "KILL", self._shell_pid])
        self._drop_socket()

    def _drop_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _exit_code(self) -> int | None:
        for _ in range(20):  # the engine may see the exec end a moment after its socket closes
            state = self.client.api.exec_inspect(self._exec_id)
            if not state.get("Running"):
                return state.get("ExitCode")
            time.sleep(0.05)
        return None

    def _beside(self, cmd: list[str]) -> None:
        """A one-off command next to the session, not in it."""
        self._container.exec_run(cmd, workdir=WORKDIR)

    def _raw_socket(self):
        # For unix sockets the SDK returns the HTTP connection's socket.SocketIO; the socket under
        # it is what select, recv and sendall want.
        return getattr(self._sock, "_sock", self._sock)

    def _sock_send(self, data: bytes) -> None:
        try:
            self._raw_socket().sendall(data)
        except OSError as e:
            raise RuntimeError_(f"the bash session in the container is gone ({e})") from None

    # ------------------------------------------------------------------ files, as the agent sees them

    def _path(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(WORKDIR, path))

    def write_file(self, path: str, content: str) -> None:
        path, data = self._path(path), content.encode()
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            member = tarfile.TarInfo(path.lstrip("/"))
            member.size, member.mode, member.mtime = len(data), 0o644, int(time.time())
            tar.addfile(member, io.BytesIO(data))
        # Unpacked at /, so missing parent folders are made on the way.
        if not self._container.put_archive("/", archive.getvalue()):
            raise RuntimeError_(f"could not write {path} in the container")

    def read_file(self, path: str) -> str:
        path = self._path(path)
        # GET /containers/{id}/archive by hand: the SDK's get_archive also decodes a path-stat header,
        # and with podman that decoding now and then fails (binascii.Error: Incorrect padding).
        api = self.client.api
        response = api.get(f"{api.base_url}/v{api.api_version}/containers/{self._container.id}/archive",
                           params={"path": path})
        if response.status_code == 404:
            raise FileNotFoundError(path)
        if response.status_code != 200:
            raise RuntimeError_(f"could not read {path} in the container: {response.status_code} {response.text[:200]}")
        with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                raise IsADirectoryError(path)
            return tar.extractfile(member).read().decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Remove the container (and with it every process the agent started); idempotent."""
        _live.discard(self)
        self._drop_socket()
        container, self._container = self._container, None
        if container is None:
            return
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as e:
            log.warning("could not remove container %s: %s", container.name, e)

    def __enter__(self) -> "DockerRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Results of _pump besides an exit code.
