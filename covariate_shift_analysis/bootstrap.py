"""The two resampling schemes behind the bands.

- `paired_bootstrap` (default protocol): a percentile bootstrap over instances by
  `scipy.stats.bootstrap`. One replicate draws n instances with replacement and evaluates every
  metric on the same draw, for both sets at once (paired: an instance's reference and compared
  rows, all its rollouts, travel together). Replicates where a metric cannot be computed (e.g. a
  draw with too few distinct instances for cross-validation) are left out of its band, and the
  count of those that remain is reported.
- `redraw_bootstrap` (the paper's protocol): the instances stay fixed; each replicate re-draws
  one rollout per instance and set, and the line is the mean of the replicates.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    estimate: float
    ci_low: float
    ci_high: float
    n: int  # instances that qualified
    n_boot: int  # replicates in which the metric could be computed


def _percentile_band(column: np.ndarray, level: float) -> tuple[float, float, int]:
    column = column[np.isfinite(column)]
    if not len(column):
        return math.nan, math.nan, 0
    alpha = (1 - level) / 2
    low, high = np.percentile(column, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high), len(column)


def paired_bootstrap(
    stat: Callable[[np.ndarray], dict[str, float]],
    n: int,
    *,
    n_boot: int,
    level: float,
    rng: np.random.Generator,
    on_replicate: Callable[[], None] | None = None,
) -> dict[str, Estimate]:
    """`stat(indices)` -> {metric: value} (NaN where it cannot be computed) on instances `indices`
    (0..n-1, with repeats). Returns the full-sample value and the percentile band per metric."""
    from scipy.stats import bootstrap

    point = stat(np.arange(n))
    names = list(point)

    def vector(idx: np.ndarray) -> np.ndarray:
        values = stat(np.asarray(idx, dtype=int))
        if on_replicate:
            on_replicate()
        return np.array([values.get(name, math.nan) for name in names])

    seed_arg = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns of a "degenerate" distribution when a metric is NaN somewhere
        res = bootstrap((np.arange(n),), vector, n_resamples=n_boot, vectorized=False, method="percentile",
                        confidence_level=level, **{seed_arg: rng})
    replicates = np.asarray(res.bootstrap_distribution, dtype=float).reshape(len(names), -1)
    low_all = np.atleast_1d(res.confidence_interval.low)
    high_all = np.atleast_1d(res.confidence_interval.high)
    result = {}
    for j, name in enumerate(names):
        if np.isfinite(replicates[j]).all():  # scipy's own percentile interval
            low, high, kept = float(low_all[j]), float(high_all[j]), replicates.shape[1]
        else:  # the same interval over the replicates where the metric could be computed
            low, high, kept = _percentile_band(replicates[j], level)
        result[name] = Estimate(float(point[name]), low, high, n, kept)
    return result


def redraw_bootstrap(
    stat: Callable[[dict[str, np.ndarray]], dict[str, float]],
    counts: dict[str, np.ndarray],
    *,
    n_boot: int,
    level: float,
    rng: np.random.Generator,
    distinct: dict[str, str] | None = None,
) -> dict[str, Estimate]:
    """The paper's bootstrap: fixed instances, one rollout re-drawn per instance in each replicate.

    `counts[name][k]` is how many rollouts instance k has in draw `name` (0: the instance is not in
    it). Each replicate draws, for every draw name and instance, one rollout uniformly, and calls
    `stat({name: chosen rollout per instance (-1 where none)})`. `distinct={a: b}` makes draw `a`
    pick a different rollout than draw `b` of the same instance (a second reference rollout for the
    noise floor; needs 2+ rollouts there). The estimate is the mean of the replicates, the band
    their percentile interval; non-finite replicates are left out of both.
    """
    distinct = distinct or {}
    order = [name for name in counts if name not in distinct] + [name for name in counts if name in distinct]
    rows: list[dict[str, float]] = []
    for _ in range(n_boot):
        picks: dict[str, np.ndarray] = {}
        for name in order:
            c = np.asarray(counts[name])
            u = rng.random(len(c))
            if name in distinct:  # uniform over the rollouts other than the one `distinct[name]` took
                other = picks[distinct[name]]
                draw = np.floor(u * np.maximum(c - 1, 0)).astype(int)
                draw = np.where(draw >= other, draw + 1, draw)
                picks[name] = np.where(c >= 2, draw, -1)
            else:
                picks[name] = np.where(c >= 1, np.floor(u * c).astype(int), -1)
        rows.append(stat(picks))
    names = list(dict.fromkeys(k for row in rows for k in row))
    result = {}
    for name in names:
        column = np.array([row.get(name, math.nan) for row in rows], dtype=float)
        low, high, kept = _percentile_band(column, level)
        mean = float(column[np.isfinite(column)].mean()) if kept else math.nan
        result[name] = Estimate(mean, low, high, 0, kept)  # n: the caller knows its instances
    return result
