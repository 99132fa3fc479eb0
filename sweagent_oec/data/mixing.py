"""Combining record sources into one training set: dedup, weights, a per-instance cap, held-out ids.

Order (each step seeded from one `seed`, so a rerun gives the same dataset):
  1. dedup     records whose messages are identical (same roles, contents, tool calls) are kept once,
               the first one in source order
  2. weights   a source's weight w keeps each of its records floor(w) times, plus once more with
               probability w - floor(w): 1 keeps all, 0.5 about half, 2 duplicates
  3. cap       at most `max_per_instance` records per instance id (a seeded random choice)
  4. held-out  records of the held-out instance ids go to their own split
  5. shuffle   the training split is shuffled
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def content_hash(record: dict) -> str:
    """Hash of what a model would be trained on: every message's role, content and tool calls."""
    import hashlib  # here: convert passes its own key and so never loads OpenSSL

    parts = [(m["role"], m.get("content") or "", m.get("tool_calls") or None, m.get("train")) for m in record["messages"]]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass
class MixResult:
    train: list
    heldout: list
    counts: dict = field(default_factory=dict)


def mix(sources: dict[str, list], weights: dict[str, float] | None = None, max_per_instance: int | None = None,
        heldout_ids: set[str] | None = None, seed: int = 0, dedup: bool = True,
        key: Callable[[Any], str] = content_hash, instance_id: Callable[[Any], str] = lambda r: r["instance_id"]) -> MixResult:
    """`sources` maps a source name to its records (in a stable order); see the module docstring.

    Records may be anything `key` (the dedup hash) and `instance_id` read: the convert stage mixes
    small references to records it has already written, never the records themselves."""
    rng = random.Random(seed)
    weights = weights or {}
    counts: dict = {"duplicates": 0, "weighted_in": 0, "weighted_out": 0, "over_instance_cap": 0, "heldout": 0}
    seen: set[str] = set()
    pool: list[dict] = []
    for name, records in sources.items():
        weight = weights.get(name, 1.0)
        for record in records:
            if dedup:
                digest = key(record)
                if digest in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(digest)
            copies = math.floor(weight) + (1 if rng.random() < weight - math.floor(weight) else 0)
            counts["weighted_in"] += max(copies - 1, 0)
            counts["weighted_out"] += 1 if copies == 0 else 0
            pool += [record] * copies
    if max_per_instance is not None:
        pool = _cap(pool, max_per_instance, rng, counts, instance_id)
    heldout_ids = heldout_ids or set()
    train = [r for r in pool if instance_id(r) not in heldout_ids]
    heldout = [r for r in pool if instance_id(r) in heldout_ids]
    counts["heldout"] = len(heldout)
    rng.shuffle(train)
    return MixResult(train, heldout, counts)


def _cap(pool: list, limit: int, rng: random.Random, counts: dict, instance_id: Callable[[Any], str]) -> list:
    by_instance: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(pool):
        by_instance[instance_id(record)].append(i)
    keep: set[int] = set()
    for indices in by_instance.values():
        keep.update(rng.sample(indices, limit) if len(indices) > limit else indices)
    counts["over_instance_cap"] = len(pool) - len(keep)
    return [r for i, r in enumerate(pool) if i in keep]


def per_source(records: list[dict]) -> dict[str, int]:
    return dict(Counter(r["source"] for r in records))
