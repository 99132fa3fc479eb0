"""The `shift` stage: trajectory sets -> turn embeddings -> per-turn divergence from the reference set
with bootstrap bands -> tables and one plot per metric.

Two protocols (README, "Protocols"): `default` (this toolkit's: action texts by step, a cluster
bootstrap over instances, full-sample estimates) and `paper` (the OEC paper's: every message by
message index / 2, one rollout re-drawn per instance in each replicate, the replicate mean; in
`paper.py`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from covariate_shift_analysis import metrics as divergence
from covariate_shift_analysis.bootstrap import paired_bootstrap
from covariate_shift_analysis.embed import DEFAULT_MODEL, embed_texts
from covariate_shift_analysis.turns import TEXT_KINDS, TrajectorySet, load_set
from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text

METRICS = ("frechet", "kl", "mmd2", "auc")
PAPER_METRICS = ("frechet", "kl")
PROTOCOLS = ("default", "paper")
COLUMNS = ("metric", "set", "reference", "turn", "n", "estimate", "ci_low", "ci_high", "level", "n_boot", "n_rollouts", "protocol")
#: Below this many instances per point a figure says its bands are not to be trusted.
RECOMMENDED_MIN = 10
#: protocol -> defaults of the settings the two protocols set differently
DEFAULTS = {
    "default": dict(n_boot=200, eps=divergence.DEFAULT_EPS, seed=42, metrics=list(METRICS), max_rollouts=None, text="action"),
    "paper": dict(n_boot=500, eps=1e-6, seed=42, metrics=list(PAPER_METRICS), max_rollouts=50, text="message"),
}


@dataclass
class ShiftConfig:
    sets: list[tuple[str, Path]]
    out: Path
    reference: str | None = None  # default: the first set
    protocol: str = "default"
    text: str | None = None  # default protocol: action | observation | both; the paper's embeds messages
    drop_first_turn: bool = False
    model: str = DEFAULT_MODEL
    cache_dir: Path | None = None
    batch_size: int = 64
    device: str = "cpu"
    pca: int | None = None
    metrics: list[str] | None = None
    eps: float | None = None
    n_boot: int | None = None
    level: float = 0.95
    min_instances: int = 10
    folds: int | None = None
    seed: int | None = None
    cut_at_median: bool = False
    #: most rollouts used per instance and set (paper: 50; default protocol: all)
    max_rollouts: int | None = None
    #: paper protocol: leave out points with fewer than min_instances instead of drawing them hollow
    hide_below_min: bool = False

    def validate(self) -> None:
        labels = [label for label, _ in self.sets]
        if self.protocol not in PROTOCOLS:
            raise UserError(f"--protocol {self.protocol!r}: choose one of {', '.join(PROTOCOLS)}")
        if len(labels) < 2:
            raise UserError("give at least two sets: --set expert=DIR --set student=DIR")
        if len(set(labels)) != len(labels):
            raise UserError(f"set labels must differ; got {', '.join(labels)}")
        if self.reference is None:
            self.reference = labels[0]
        if self.reference not in labels:
            raise UserError(f"--reference {self.reference!r} is not one of the sets ({', '.join(labels)})")
        if self.protocol == "paper":
            fixed = [("--text", self.text is not None), ("--drop-first-turn", self.drop_first_turn), ("--pca", self.pca is not None),
                     ("--folds", self.folds is not None), ("--cut-at-median", self.cut_at_median)]
            for option, given in fixed:
                if given:
                    raise UserError(f"{option} is not part of the paper protocol (every message embedded, three views); "
                                    "drop it or use --protocol default")
            if self.metrics and any(m not in PAPER_METRICS for m in self.metrics):
                raise UserError(f"--metric {', '.join(m for m in self.metrics if m not in PAPER_METRICS)}: the paper protocol "
                                f"computes {' and '.join(PAPER_METRICS)}; use --protocol default for the others")
        elif self.hide_below_min:
            raise UserError("--hide-below-min is for --protocol paper; the default protocol never reports turns below --min-instances")
        for key, value in DEFAULTS[self.protocol].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.folds = 5 if self.folds is None else self.folds
        if self.text not in (*TEXT_KINDS, "message") or (self.protocol == "default" and self.text == "message"):
            raise UserError(f"--text {self.text!r}: choose one of {', '.join(TEXT_KINDS)}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise UserError(f"--metric {', '.join(unknown) or '(none)'}: choose from {', '.join(METRICS)}")
        checks = [
            (self.n_boot >= 1, f"--bootstrap {self.n_boot}: need at least 1 replicate (200+ for stable bands)"),
            (0 < self.level < 1, f"--ci {self.level}: give a coverage between 0 and 1, e.g. 0.95"),
            (self.min_instances >= (2 if self.protocol == "paper" else 3),
             f"--min-instances {self.min_instances}: need at least 3 to fit covariances and cross-validate (2 in the paper protocol)"),
            (self.folds >= 2, f"--folds {self.folds}: cross-validation needs at least 2 folds"),
            (self.eps >= 0, f"--eps {self.eps}: the covariance ridge cannot be negative"),
            (self.pca is None or self.pca >= 1, f"--pca {self.pca}: give a number of dimensions >= 1"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: give a positive batch size"),
            (self.max_rollouts is None or self.max_rollouts >= (2 if self.protocol == "paper" else 1),
             f"--max-rollouts {self.max_rollouts}: need at least 2 in the paper protocol (two reference rollouts per instance), 1 otherwise"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


def qualifying_rules(config: ShiftConfig) -> list[str]:
    return [
        "every rollout of an instance is used (the instance is the .traj file's stem less a branch suffix __b<n>)"
        + (f", at most {config.max_rollouts} per instance and set" if config.max_rollouts else ""),
        f"an instance counts at turn t only if both '{config.reference}' and the compared set have a rollout with a turn t"
        + (" (turn 1 dropped by --drop-first-turn)" if config.drop_first_turn else ""),
        f"a turn index is reported only if at least {config.min_instances} instances count at it",
        f"estimate: the metric on all rollouts of the qualifying instances; bands: {config.level:.0%} percentile intervals of "
        f"{config.n_boot} paired bootstrap replicates over instances (scipy.stats.bootstrap), an instance's rollouts resampled together",
    ]


def set_summary(s: TrajectorySet) -> dict:
    return {"folder": str(s.folder), "instances": len(s.rollouts), "rollouts": s.n_rollouts,
            "instances_with_several_rollouts": s.several(), "set_aside": s.set_aside,
            "median_length": float(np.median(s.lengths()))}


def embed_keys(sets: list[TrajectorySet], keys: list[tuple[str, str, int, int]], config: ShiftConfig) -> tuple[np.ndarray, int]:
    """Vectors of `keys` ((set label, instance, rollout number, unit index)), in order; and how many
    texts were newly embedded."""
    from rich.progress import Progress

    by_label = {s.label: s for s in sets}
    texts = [by_label[label].rollouts[iid][r].texts[t] for label, iid, r, t in keys]
    with Progress(transient=True) as bar:
        task = bar.add_task("embedding", total=None)
        vectors, embedded = embed_texts(
            texts, config.model, config.cache_dir, batch_size=config.batch_size, device=config.device,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if config.pca:
        vectors = _pca(vectors, config.pca)
    return vectors, embedded


def _pca(vectors: np.ndarray, k: int) -> np.ndarray:
    """Project on the top k principal axes of all turns of all sets (one projection for every
    turn and set, so values stay comparable across turns)."""
    from sklearn.decomposition import PCA

    if k > min(vectors.shape):
        raise UserError(f"--pca {k}: at most {min(vectors.shape)} dimensions here ({vectors.shape[0]} turns, {vectors.shape[1]}-d embeddings)")
    return PCA(n_components=k, random_state=0).fit_transform(vectors)


def _stat(x: list[np.ndarray], y: list[np.ndarray], config: ShiftConfig, bandwidth: float):
    """The metrics of one (compared set, turn) on instance indices `idx` (repeats allowed); x[k] and
    y[k] hold the rows (one per rollout) of instance k."""

    def compute(idx: np.ndarray) -> dict[str, float]:
        xs, ys = np.vstack([x[k] for k in idx]), np.vstack([y[k] for k in idx])
        gx = np.concatenate([[k] * len(x[k]) for k in idx]).astype(int)
        gy = np.concatenate([[k] * len(y[k]) for k in idx]).astype(int)
        out = {}
        for name in config.metrics:
            try:
                if name == "frechet":
                    out[name] = divergence.frechet_distance(xs, ys, config.eps)
                elif name == "kl":
                    out[name] = divergence.gaussian_kl(xs, ys, config.eps)
                elif name == "mmd2":
                    out[name] = divergence.mmd2_rbf(xs, ys, bandwidth, ids=gx, ids_y=gy)
                else:
                    out[name] = divergence.classifier_auc(xs, ys, groups=np.r_[gx, gy], folds=config.folds, seed=config.seed)
            except (ValueError, np.linalg.LinAlgError):
                out[name] = math.nan  # e.g. a resample with too few distinct instances
        return out

    return compute


def _reaching(s: TrajectorySet, iid: str, t: int) -> list[int]:
    return [r for r, rollout in enumerate(s.rollouts.get(iid, [])) if t in rollout.texts]


def _qualifying_turns(ref: TrajectorySet, other: TrajectorySet, min_instances: int, max_turn: float | None) -> list[tuple[TrajectorySet, int, list[str]]]:
    """(other, turn, instance ids) for each turn index that meets the qualifying rules."""
    shared = sorted(set(ref.rollouts) & set(other.rollouts))
    turns = sorted({t for s in (ref, other) for iid in shared for r in s.rollouts[iid] for t in r.texts})
    jobs = []
    for t in turns:
        ids = [iid for iid in shared if _reaching(ref, iid, t) and _reaching(other, iid, t)]
        if len(ids) >= min_instances and (max_turn is None or t <= max_turn):
            jobs.append((other, t, ids))
    if not jobs:
        raise UserError(
            f"no turn index has {min_instances}+ instances with that turn in both '{ref.label}' and '{other.label}' "
            f"(they share {len(shared)} instances); check the folders or lower --min-instances"
        )
    return jobs


def write_tables(out: Path, stem: str, columns: tuple[str, ...], rows: list[dict], summary: dict) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / f"{stem}.csv", buffer.getvalue())
    # Strict JSON: a metric that could not be computed is null, not NaN.
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]
    atomic_write_text(out / f"{stem}.json", json.dumps({**summary, "rows": clean}, indent=1, allow_nan=False))


def run_shift(config: ShiftConfig) -> dict:
    """Run the analysis; write `shift.csv`, `shift.json` and `shift_<metric>.{png,pdf}` to config.out
    (`shift_paper*` under --protocol paper)."""
    config.validate()
    if config.protocol == "paper":
        from covariate_shift_analysis.paper import run_paper

        return run_paper(config)
    return _run_default(config)


def _run_default(config: ShiftConfig) -> dict:
    from rich.progress import Progress
    from threadpoolctl import threadpool_limits

    from covariate_shift_analysis.plots import plot_metric

    sets = [load_set(label, Path(folder), config.text, drop_first_turn=config.drop_first_turn, seed=config.seed,
                     max_rollouts=config.max_rollouts) for label, folder in config.sets]
    ref = next(s for s in sets if s.label == config.reference)
    others = [s for s in sets if s.label != config.reference]

    max_turn = float(np.median(ref.lengths())) if config.cut_at_median else None
    jobs = [job for other in others for job in _qualifying_turns(ref, other, config.min_instances, max_turn)]

    # Embed only the turns that are compared.
    keys = sorted({(s.label, iid, r, t) for other, t, ids in jobs for s in (ref, other) for iid in ids for r in _reaching(s, iid, t)})
    vectors, embedded = embed_keys(sets, keys, config)
    row_of = {key: i for i, key in enumerate(keys)}
    # One kernel for every turn and set, so MMD² values are comparable along the plot.
    bandwidth = divergence.median_bandwidth(vectors, seed=config.seed)

    def block(s: TrajectorySet, iid: str, t: int) -> np.ndarray:
        return vectors[[row_of[(s.label, iid, r, t)] for r in _reaching(s, iid, t)]]

    rows = []
    # One BLAS thread: the matrices here are small, and BLAS threads that spin-wait for each other
    # made the bootstrap ~10x slower on a busy 2-core machine.
    with threadpool_limits(limits=1), Progress(transient=True) as bar:
        task = bar.add_task("bootstrap", total=len(jobs) * config.n_boot)
        for job_no, (other, t, ids) in enumerate(jobs):
            x = [block(other, iid, t) for iid in ids]
            y = [block(ref, iid, t) for iid in ids]
            rng = np.random.default_rng([config.seed, job_no])
            results = paired_bootstrap(_stat(x, y, config, bandwidth), len(ids), n_boot=config.n_boot, level=config.level,
                                       rng=rng, on_replicate=lambda: bar.advance(task))
            n_rollouts = sum(len(a) for a in x)
            for name, est in results.items():
                rows.append({"metric": name, "set": other.label, "reference": ref.label, "turn": t, **asdict(est),
                             "level": config.level, "n_rollouts": n_rollouts, "protocol": "default"})
    rows = [{c: row[c] for c in COLUMNS} for row in sorted(rows, key=lambda r: (METRICS.index(r["metric"]), r["set"], r["turn"]))]

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "protocol": "default",
        "reference": ref.label,
        "sets": {s.label: set_summary(s) for s in sets},
        "settings": {"text": config.text, "drop_first_turn": config.drop_first_turn, "model": config.model, "pca": config.pca,
                     "metrics": config.metrics, "eps": config.eps, "mmd_bandwidth": bandwidth, "bootstrap": config.n_boot,
                     "level": config.level, "min_instances": config.min_instances, "folds": config.folds, "seed": config.seed,
                     "cut_at_median": config.cut_at_median, "max_turn": max_turn, "max_rollouts": config.max_rollouts},
        "qualifying_rules": qualifying_rules(config),
        "texts_embedded": embedded,
    }
    write_tables(out, "shift", COLUMNS, rows, summary)
    summary["rows"] = rows

    subtitle = (f"default protocol: {config.text} text, {Path(config.model).name}" + (f", PCA {config.pca}" if config.pca else "")
                + f", {config.n_boot} bootstrap replicates; turns with n < {config.min_instances} instances not shown")
    summary["plots"] = [str(p) for name in config.metrics for p in plot_metric(rows, name, ref.label, out, subtitle)]
    return summary
