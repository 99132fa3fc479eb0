"""File helpers every stage uses: atomic writes, and JSON Lines reading with numbered errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sweagent_oec.errors import UserError


def _umask() -> int:
    # Read, not set-and-restore: os.umask(0) would briefly widen the mask for every other thread.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_umask_allows(fd: int) -> None:
    """Give a file made by `mkstemp` (always 0600) the mode a plain `open` would: 0644 under umask 0022,
    so teammates on shared storage can read what a run wrote."""
    os.fchmod(fd, 0o666 & ~_umask())


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        as_umask_allows(fd)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_lines(text: str, bad_line: Callable[[int, str], str]) -> Iterator[tuple[int, Any]]:
    """(line number, value) per non-blank line. A line that is not JSON raises one UserError whose
    text is `bad_line(line number, json's reason)`, so each reader says what its lines should be."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(bad_line(lineno, e.msg)) from None
        yield lineno, value
