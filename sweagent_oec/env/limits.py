"""Per-runtime limits that bind root: a cgroup (v2, or v1's pids and memory hierarchies) per session.

`Cgroup.create(name, max_processes, memory_bytes)` makes the runtime's cgroup(s) and sets the limits;
the session joins them before it execs (see `join_command`), so everything it starts is inside and
counted, setsid/double-forked strays included. `kill()` ends every process inside; `remove()`
deletes the cgroup(s). Where no cgroup is writable (a user without delegation) the fallback is
rlimits (`rlimit_commands`): memory per process, and processes per uid (which never binds root).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: Under the cgroup v2 mount: the folder that holds one cgroup per runtime.
V2_PARENT = "sweagent-oec"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.I)


def parse_size(value: int | str | None) -> int | None:
    """Bytes from 123, "512m", "8g", "2GiB" (powers of 1024); None stays None (no limit)."""
    if value is None or isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size: use bytes or a number with k, m, g or t (e.g. 8g)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, 'cgroup' | 'cgroup2', controllers of a v1 hierarchy) from /proc/self/mountinfo."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        found.append((point, tail[0], set(tail[2].split(",")) if tail[0] == "cgroup" else set()))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and under '' its v2 path."""
    paths = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    except (OSError, ValueError):
        pass
    return paths


def _write(path: Path, text: str) -> bool:
    try:
        path.write_text(text)
        return True
    except OSError:
        return False


class Cgroup:
    """One runtime's cgroup folders (one per hierarchy used) and the limits set in them."""

    def __init__(self):
        self.dirs: list[Path] = []
        self.max_processes: int | None = None
        self.memory_limit: int | None = None
        self.versions: set[str] = set()

    @classmethod
    def create(cls, name: str, max_processes: int | None, memory_bytes: int | None) -> "Cgroup | None":
        """The runtime's cgroup with both limits set; None when a limit cannot be set in any hierarchy.

        Its folders are named `<this pid>-<name>`: empty ones whose process is gone (a launcher that was
        killed before close) are removed on the way.
        """
        self = cls()
        name = f"{os.getpid()}-{name}"
        try:
            self._create(name, max_processes, memory_bytes)
        except OSError as e:
            log.debug("no cgroup for %s: %s", name, e)
            self.remove()
            return None
        if (max_processes is not None and self.max_processes is None) or (memory_bytes is not None and self.memory_limit is None) \
                or not self.dirs:
            self.remove()
            return None
        return self

    def _create(self, name: str, max_processes: int | None, memory_bytes: int | None) -> None:
        mounts, own = _mounts(), _own_paths()
        v1 = {c: point for point, kind, controllers in mounts if kind == "cgroup" for c in controllers}
        v2 = next((point for point, kind, _ in mounts if kind == "cgroup2"), None)
        v2_dir = None
        if v2 is not None and os.access(v2, os.W_OK):
            # One folder per runtime under <v2>/sweagent-oec, the controllers we need enabled on the way
            # (possible at the mount's root; a folder with processes could not have them).
            parent = Path(v2, V2_PARENT)
            parent.mkdir(exist_ok=True)
            _reap(parent, "")
            available = set(Path(v2, "cgroup.controllers").read_text().split())
            wanted = [c for c in ("pids", "memory") if c in available and c not in v1]
            for folder in (Path(v2), parent):
                for controller in wanted:
                    _write(folder / "cgroup.subtree_control", f"+{controller}")
            v2_dir = parent / name
            v2_dir.mkdir()
            self.dirs.append(v2_dir)
            self.versions.add("v2")
        enabled = set((v2_dir.parent / "cgroup.subtree_control").read_text().split()) if v2_dir else set()
        for controller, limit in (("pids", max_processes), ("memory", memory_bytes)):
            if limit is None:
                continue
            if controller in enabled and controller not in v1:
                folder = v2_dir
                ok = _write(folder / "pids.max", str(limit)) if controller == "pids" else \
                    _write(folder / "memory.max", str(limit)) and (_write(folder / "memory.swap.max", "0")
                                                                   or not (folder / "memory.swap.max").exists())
            elif controller in v1 and os.access(v1[controller], os.W_OK):
                folder = Path(v1[controller] + own.get(controller, "/").rstrip("/"), f"oec-{name}")
                _reap(folder.parent, "oec-")
                folder.mkdir()
                self.dirs.append(folder)
                self.versions.add("v1")
                if controller == "pids":
                    ok = _write(folder / "pids.max", str(limit))
                else:
                    ok = _write(folder / "memory.limit_in_bytes", str(limit))
                    # No swap either, where swap is accounted (memsw must not be below the limit).
                    if ok and (folder / "memory.memsw.limit_in_bytes").exists():
                        ok = _write(folder / "memory.memsw.limit_in_bytes", str(limit))
            else:
                continue
            if ok and controller == "pids":
                self.max_processes = limit
            elif ok:
                self.memory_limit = limit

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes its pid to, to join every folder of this cgroup."""
        return [str(folder / "cgroup.procs") for folder in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.dirs:
            try:
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return found

    def kill(self, wait: float = 5.0) -> None:
        """SIGKILL every process inside (cgroup.kill where the kernel has it), until none is left."""
        for folder in self.dirs:
            _write(folder / "cgroup.kill", "1") if (folder / "cgroup.kill").exists() else None
        deadline = time.monotonic() + wait
        while True:
            pids = self.pids()
            if not pids or time.monotonic() > deadline:
                break
            for pid in pids:  # v1: no cgroup.kill; a child forked meanwhile is caught on the next pass
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        for folder in reversed(self.dirs):
            for _ in range(100):  # rmdir fails while dying processes are still counted
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            else:
                log.warning("could not remove cgroup %s", folder)
        self.dirs = []

    def events(self) -> dict[str, int]:
        """How often the limits bit: forks refused at the process limit, processes the OOM killer ended."""
        counts = {"forks_refused": 0, "oom_kills": 0}
        for folder in self.dirs:
            for name, key, field_ in (("pids.events", "forks_refused", "max"), ("memory.events", "oom_kills", "oom_kill"),
                                      ("memory.oom_control", "oom_kills", "oom_kill")):
                try:
                    for line in (folder / name).read_text().splitlines():
                        word, _, value = line.partition(" ")
                        if word == field_:
                            counts[key] = max(counts[key], int(value))
                except (OSError, ValueError):
                    pass
        return counts

    def describe(self) -> dict:
        return {"mechanism": "cgroup " + "+".join(sorted(self.versions)), "max_processes": self.max_processes,
                "memory_limit": self.memory_limit}


def _reap(parent: Path, prefix: str) -> None:
    """Remove `parent`'s empty runtime folders (`<prefix><pid>-<id>`) whose launcher pid no longer runs."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for folder in entries:
        pid = folder.name[len(prefix):].split("-", 1)[0]
        if not folder.name.startswith(prefix) or not pid.isdigit() or "-" not in folder.name[len(prefix):]:
            continue
        if not Path(f"/proc/{pid}").exists():
            try:
                folder.rmdir()  # fails, and is left alone, while any process is still inside
            except OSError:
                pass


def join_command(cgroup: Cgroup | None, rlimits: list[str], argv: list[str], exec_: bool) -> list[str]:
    """`argv` started by a small sh that first joins the cgroup and sets `rlimits` (ulimit arguments).

    With `exec_` the sh becomes the program; without, it stays as its parent: a helper whose environment
    is the session's own, so `/proc/$PPID/environ` shows nothing of the launcher's.
    """
    script = ('while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; '
              + "".join(f"ulimit {limit} || exit 125; " for limit in rlimits)
              + ('exec "$@"' if exec_ else '"$@"; exit $?'))
    return ["sh", "-c", script, "oec-session", *(cgroup.procs_files if cgroup else []), "--", *argv]


def rlimit_commands(max_processes: int | None, memory_bytes: int | None) -> tuple[list[str], dict]:
    """The fallback without a cgroup: ulimit arguments, and what they bind."""
    limits, described = [], {"mechanism": "rlimit", "max_processes": None, "memory_limit_per_process": None}
    if memory_bytes is not None:
        limits.append(f"-v {max(1, memory_bytes // 1024)}")
        described["memory_limit_per_process"] = memory_bytes
    if max_processes is not None and os.getuid() != 0:  # RLIMIT_NPROC never binds uid 0
        limits.append(f"-u {max_processes}")
        described["max_processes_per_uid"] = max_processes
    return limits, described
