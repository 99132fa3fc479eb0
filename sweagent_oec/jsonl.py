"""Reading JSON Lines: one value per non-blank line, a bad line named by its number."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from sweagent_oec.errors import UserError


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
