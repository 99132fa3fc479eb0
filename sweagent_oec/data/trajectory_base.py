"""The part of the `.traj` format that needs no models: the two roles, the format error, and reading
back the Python-repr values SWE-agent sometimes writes. `trajectory.py` (the pydantic models) takes
these from here; `convert` reads files through msgspec and imports only this module, so a
conversion never imports pydantic (~9 MiB and ~0.1 s of start-up)."""

from __future__ import annotations

import ast
import json
from typing import Any

STUDENT = "student"
EXPERT = "expert"


class TrajectoryFormatError(ValueError):
    """A file that is not a readable trajectory; the message names the file and the problem."""


def _literal(value: Any) -> Any:
    """SWE-agent sometimes writes structured values as their Python repr; read them back."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "[{(":
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                try:
                    return json.loads(text)
                except ValueError:
                    return value
    return value
