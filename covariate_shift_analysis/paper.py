"""The OEC paper's covariate-shift protocol (`shift --protocol paper`).

- Every message of the conversation is embedded; message i sits at x = i / 2 (a model reply and its
  observation make one turn).
- Each instance contributes up to `max_rollouts` (50) rollouts per set. At a message index an
  instance qualifies when 2+ reference rollouts and 1+ compared rollouts reach it.
- 500 paired replicates (seed 42): each re-draws one rollout per instance and set (the instances
  themselves are fixed) and computes the Fréchet distance and the Gaussian KL (ridge eps 1e-6)
  between the compared and the reference rollouts drawn; the line is the mean of the replicates,
  the band their percentile interval. "Paired": in a replicate every comparison uses the same
  reference draw.
- The noise floor: a second, different reference rollout of each instance against the first
  (why two reference rollouts are required), drawn in the same replicates.
- Three views: cut at the reference's median length (x ≤ median / 2, lengths in messages), at the
  median + 1 SD (population SD over the reference rollouts), and the full length.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from covariate_shift_analysis import metrics as divergence
from covariate_shift_analysis.bootstrap import redraw_bootstrap
from covariate_shift_analysis.turns import TrajectorySet, load_set
from sweagent_oec.errors import UserError

COLUMNS = ("metric", "set", "reference", "x", "message", "n", "estimate", "ci_low", "ci_high", "level", "n_boot",
           "n_rollouts", "below_min", "protocol")
VIEWS = ("median", "median_plus_sd", "full")
#: Rollouts each side needs at a message index for an instance to count there.
MIN_REFERENCE_ROLLOUTS, MIN_COMPARED_ROLLOUTS = 2, 1
METRIC_FUNCTIONS = {"frechet": divergence.frechet_gaussians, "kl": divergence.kl_gaussians}


def floor_label(reference: str) -> str:
    return f"{reference} (another rollout)"


def view_limits(reference_lengths: list[int], max_x: float) -> dict[str, float]:
    """x up to which each view runs: the reference's median length, median + 1 SD (lengths in
    messages, so halved to x), and the last x there is."""
    lengths = np.asarray(reference_lengths, dtype=float)
    median, sd = float(np.median(lengths)), float(np.std(lengths))
    return {"median": median / 2, "median_plus_sd": (median + sd) / 2, "full": float(max_x)}


def qualifying_rules(config) -> list[str]:
    return [
        f"every message embedded; message i is at x = i / 2; up to {config.max_rollouts} rollouts per instance and set "
        "(a reproducible pick by --seed when there are more; the rest counted under set_aside)",
        f"at message i an instance counts if {MIN_REFERENCE_ROLLOUTS}+ '{config.reference}' rollouts and "
        f"{MIN_COMPARED_ROLLOUTS}+ compared rollouts reach message i; a point needs 2+ such instances",
        f"estimate: mean over {config.n_boot} paired replicates (seed {config.seed}), each re-drawing one rollout per instance "
        f"and set; band: their {config.level:.0%} percentile interval; Gaussian ridge eps {config.eps:g}",
        f"noise floor '{floor_label(config.reference)}': a second, different '{config.reference}' rollout of each instance "
        "against the first, in the same replicates",
        f"points with fewer than {config.min_instances} instances are " + ("left out of the plots" if config.hide_below_min
                                                                          else "drawn hollow") + " (below_min in the table)",
    ]


def compare_at(ref_blocks: list[np.ndarray], others: dict[str, list[np.ndarray | None]], *, metrics: list[str], eps: float,
               n_boot: int, level: float, rng: np.random.Generator, floor: str | None = "floor") -> dict[tuple[str, str], dict]:
    """One message index. `ref_blocks[k]`: the reference rollouts' embeddings of instance k (rows;
    instances with fewer than 2 rows do not count); `others[label][k]`: a compared set's (None or 0 rows where it has none). Returns
    {(comparison, metric): {estimate, ci_low, ci_high, n_boot, n, n_rollouts}}; `floor` names the
    reference-vs-reference comparison (None: not computed)."""
    counts = {"ref": np.array([len(b) if len(b) >= MIN_REFERENCE_ROLLOUTS else 0 for b in ref_blocks])}
    comparisons = {}
    if floor:
        counts[floor] = counts["ref"]
        comparisons[floor] = ref_blocks
    for label, blocks in others.items():
        counts[label] = np.array([0 if b is None else len(b) for b in blocks])
        comparisons[label] = blocks

    def stat(picks: dict[str, np.ndarray]) -> dict[str, float]:
        out = {}
        for label, blocks in comparisons.items():
            chosen = picks[label]
            keep = np.flatnonzero((chosen >= 0) & (picks["ref"] >= 0))
            if len(keep) < 2:
                continue
            x = np.stack([blocks[k][chosen[k]] for k in keep])
            y = np.stack([ref_blocks[k][picks["ref"][k]] for k in keep])
            try:
                fits = divergence.fitted_pair(x, y, eps)  # once for both metrics
            except (ValueError, np.linalg.LinAlgError):
                fits = None
            for name in metrics:
                try:
                    out[f"{label}\0{name}"] = METRIC_FUNCTIONS[name](*fits[0], *fits[1]) if fits else math.nan
                except (ValueError, np.linalg.LinAlgError):
                    out[f"{label}\0{name}"] = math.nan
        return out

    estimates = redraw_bootstrap(stat, counts, n_boot=n_boot, level=level, rng=rng, distinct={floor: "ref"} if floor else None)
    result = {}
    for key, est in estimates.items():
        label, name = key.split("\0")
        usable = (counts[label] >= (2 if label == floor else 1)) & (counts["ref"] >= MIN_REFERENCE_ROLLOUTS)
        result[(label, name)] = {"estimate": est.estimate, "ci_low": est.ci_low, "ci_high": est.ci_high, "n_boot": est.n_boot,
                                 "n": int(usable.sum()), "n_rollouts": int(counts[label][usable].sum())}
    return result


def _reaching(s: TrajectorySet, iid: str, i: int) -> list[int]:
    return [r for r, rollout in enumerate(s.rollouts.get(iid, [])) if i in rollout.texts]


def run_paper(config) -> dict:
    from rich.progress import Progress
    from threadpoolctl import threadpool_limits

    from covariate_shift_analysis.pipeline import embed_keys, set_summary, write_tables
    from covariate_shift_analysis.plots import plot_paper

    sets = [load_set(label, Path(folder), "message", seed=config.seed, max_rollouts=config.max_rollouts)
            for label, folder in config.sets]
    ref = next(s for s in sets if s.label == config.reference)
    others = [s for s in sets if s.label != config.reference]
    floor = floor_label(ref.label)

    # Per message index: the instances where the reference has 2+ rollouts reaching it.
    indices = sorted({i for rs in ref.rollouts.values() for r in rs for i in r.texts})
    jobs = []
    for i in indices:
        ids = [iid for iid in sorted(ref.rollouts) if len(_reaching(ref, iid, i)) >= MIN_REFERENCE_ROLLOUTS]
        if len(ids) >= 2:
            jobs.append((i, ids))
    if not jobs:
        several = sum(len(rs) >= MIN_REFERENCE_ROLLOUTS for rs in ref.rollouts.values())
        raise UserError(f"the paper protocol needs {MIN_REFERENCE_ROLLOUTS}+ '{ref.label}' rollouts per instance on 2+ instances; "
                        f"'{ref.label}' has {several} instance(s) with {MIN_REFERENCE_ROLLOUTS}+ rollouts under {ref.folder}")
    if not any(iid in o.rollouts for o in others for _, ids in jobs for iid in ids):
        raise UserError(f"no instance of '{ref.label}' with {MIN_REFERENCE_ROLLOUTS}+ rollouts has a rollout in "
                        f"{', '.join(repr(o.label) for o in others)}; check that the sets hold the same instances")

    keys = sorted({(s.label, iid, r, i) for i, ids in jobs for s in (ref, *others) for iid in ids for r in _reaching(s, iid, i)})
    vectors, embedded = embed_keys(sets, keys, config)
    row_of = {key: n for n, key in enumerate(keys)}

    def block(s: TrajectorySet, iid: str, i: int) -> np.ndarray | None:
        reach = _reaching(s, iid, i)
        return vectors[[row_of[(s.label, iid, r, i)] for r in reach]] if reach else None

    rows = []
    with threadpool_limits(limits=1), Progress(transient=True) as bar:
        task = bar.add_task("re-draw bootstrap", total=len(jobs))
        for i, ids in jobs:
            results = compare_at(
                [block(ref, iid, i) for iid in ids], {o.label: [block(o, iid, i) for iid in ids] for o in others},
                metrics=config.metrics, eps=config.eps, n_boot=config.n_boot, level=config.level,
                rng=np.random.default_rng([config.seed, i]), floor=floor)
            for (label, name), r in results.items():
                rows.append({"metric": name, "set": label, "reference": ref.label, "x": i / 2, "message": i, **r,
                             "level": config.level, "below_min": r["n"] < config.min_instances, "protocol": "paper"})
            bar.advance(task)
    order = [floor, *(o.label for o in others)]
    rows = [{c: row[c] for c in COLUMNS}
            for row in sorted(rows, key=lambda r: (config.metrics.index(r["metric"]), order.index(r["set"]), r["message"]))]
    if not any(r["set"] != floor for r in rows):
        raise UserError(f"no message index has 2+ instances with {MIN_REFERENCE_ROLLOUTS}+ '{ref.label}' and "
                        f"{MIN_COMPARED_ROLLOUTS}+ compared rollouts; check that the sets hold the same instances")

    views = view_limits(ref.lengths(), max(r["x"] for r in rows))
    sets_summary = {s.label: set_summary(s) for s in sets}
    # Instances that entered any point (the others lack the rollouts the protocol requires).
    for s in sets:
        name = floor if s is ref else s.label
        sets_summary[s.label]["instances_compared"] = max((r["n"] for r in rows if r["set"] == name), default=0)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "protocol": "paper",
        "reference": ref.label,
        "noise_floor": floor,
        "sets": sets_summary,
        "views": views,
        "settings": {"text": "message", "x": "message index / 2", "model": config.model, "metrics": config.metrics,
                     "eps": config.eps, "bootstrap": config.n_boot, "level": config.level, "seed": config.seed,
                     "max_rollouts": config.max_rollouts, "min_reference_rollouts": MIN_REFERENCE_ROLLOUTS,
                     "min_compared_rollouts": MIN_COMPARED_ROLLOUTS, "min_instances": config.min_instances,
                     "hide_below_min": config.hide_below_min},
        "qualifying_rules": qualifying_rules(config),
        "texts_embedded": embedded,
    }
    write_tables(out, "shift_paper", COLUMNS, rows, summary)
    summary["rows"] = rows
    subtitle = (f"paper protocol: every message ({Path(config.model).name}), mean of {config.n_boot} re-draw replicates "
                f"(seed {config.seed}), eps {config.eps:g}")
    summary["plots"] = [str(p) for name in config.metrics
                        for p in plot_paper(rows, name, ref.label, floor, views, out, subtitle, config.min_instances, config.hide_below_min)]
    return summary
