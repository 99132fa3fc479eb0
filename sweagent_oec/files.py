"""File helpers every stage uses: atomic writes, and JSON Lines reading with numbered errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sweagent_oec.errors import UserError


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
