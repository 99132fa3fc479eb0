"""The CLI's one vocabulary: the options every stage shares, spelled the same everywhere.

`-o/--output-dir` (where a command writes), `-i/--instances`, `-w/--workers`, `-c/--config`,
`--split`, `--seed` (one default, 42). Old spellings keep working for one release as hidden options
that say, once, what to use instead (`deprecated`).
"""

from __future__ import annotations

import sys
from typing import Any

import typer

#: Every command's default seed.
SEED = 42


def output_dir(default: Any = None, help: str = "Where the outputs go.") -> Any:
    return typer.Option(default, "--output-dir", "-o", help=help)


def instances(default: Any = None, help: str = "Instances: a JSON/JSONL file, a datasets folder, a Hugging Face dataset name, or 'embedded'.") -> Any:
    return typer.Option(default, "--instances", "-i", help=help)


def workers(default: int = 1, help: str = "How many at once.") -> Any:
    return typer.Option(default, "--workers", "-w", min=1, help=help)


def config(default: Any = ..., help: str = "Run config YAML; repeat to merge several in order.") -> Any:
    return typer.Option(default, "--config", "-c", help=help)


def split(help: str = "Split of a hub dataset or datasets folder (default: test for SWE-bench, else train).") -> Any:
    return typer.Option(None, "--split", help=help)


def seed(help: str = "Seed.") -> Any:
    return typer.Option(SEED, "--seed", help=help)


def old_spelling(name: str) -> Any:
    """A hidden option for a spelling being retired (`deprecated` reads it)."""
    return typer.Option(None, name, hidden=True)


def deprecated(old_value: Any, old: str, new: str, new_value: Any = None) -> Any:
    """The value given under the old spelling (with a note saying the new one), else the new value."""
    if old_value is None:
        return new_value
    print(f"note: {old} is deprecated and goes in the next release; use {new}", file=sys.stderr)
    return old_value
