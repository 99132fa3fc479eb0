"""A run's score: resolve rate with a binomial confidence interval, and its exit-status table.

`score(report, trajectories, total)`: k resolved out of n, where n is every instance the run was
asked to solve: the ids in the evaluation report and in the trajectory folders (an instance the
agent never submitted for is unresolved, not left out), or `total` (e.g. 500 for SWE-bench
Verified) when given. The interval is Clopper-Pearson's exact one (scipy's `binomtest`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sweagent_oec.errors import UserError


@dataclass
class Score:
    resolved: int
    total: int
    low: float
    high: float
    confidence: float
    exit_statuses: Counter = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.resolved / self.total if self.total else 0.0

    def lines(self) -> list[str]:
        out = [f"resolved {self.resolved}/{self.total} = {100 * self.rate:.1f}% "
               f"({100 * self.confidence:g}% CI {100 * self.low:.1f}-{100 * self.high:.1f}%, Clopper-Pearson)"]
        if self.exit_statuses:
            width = max(len(status) for status in self.exit_statuses)
            out.append(f"{'exit status':<{width}}  count")
            out += [f"{status:<{width}}  {n:5d}" for status, n in sorted(self.exit_statuses.items(), key=lambda kv: (-kv[1], kv[0]))]
        return out


def exit_statuses(trajectories: Path) -> dict[str, str]:
    """{instance_id: exit_status} of the finished `.traj` files under a run folder (shards too)."""
    statuses: dict[str, str] = {}
    for path in sorted(Path(trajectories).glob("*/*.traj")):
        if path.stem != path.parent.name:
            continue
        try:
            info = json.loads(path.read_text()).get("info") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if info.get("exit_status"):
            statuses[path.stem] = str(info["exit_status"])
    return statuses


def score(report_path: Path, trajectories: list[Path] | None = None, total: int | None = None,
          confidence: float = 0.95) -> Score:
    try:
        report = json.loads(Path(report_path).read_text())
        ids_resolved = set(report["ids_resolved"])
        ids = ids_resolved | set(report["ids_unresolved"]) | set(report["ids_error"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{report_path}: not an aggregate evaluation report.json ({type(e).__name__}: {e})") from None
    statuses: dict[str, str] = {}
    for folder in trajectories or []:
        if not Path(folder).is_dir():
            raise UserError(f"{folder}: no such trajectory folder")
        statuses.update(exit_statuses(folder))
    n = len(ids | set(statuses))
    if total is not None:
        if total < n:
            raise UserError(f"--total {total} is below the {n} instances the report and trajectories name")
        n = total
    from scipy.stats import binomtest

    low, high = (0.0, 1.0) if n == 0 else binomtest(len(ids_resolved), n).proportion_ci(confidence, method="exact")
    return Score(len(ids_resolved), n, float(low), float(high), confidence, Counter(statuses.values()))
