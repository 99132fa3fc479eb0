"""The `shift` stage: trajectory sets -> turn embeddings -> per-turn divergence from the reference set
with bootstrap bands -> shift.csv, shift.json and one plot per metric."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from covariate_shift_analysis import metrics as divergence
from covariate_shift_analysis.bootstrap import paired_bootstrap
from covariate_shift_analysis.embed import DEFAULT_MODEL, embed_texts
from covariate_shift_analysis.turns import TEXT_KINDS, TrajectorySet, load_set
from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text

METRICS = ("frechet", "kl", "mmd2", "auc")
COLUMNS = ("metric", "set", "reference", "turn", "n", "estimate", "ci_low", "ci_high", "level", "n_boot")


@dataclass
class ShiftConfig:
    sets: list[tuple[str, Path]]
    out: Path
    reference: str | None = None  # default: the first set
    text: str = "action"
    drop_first_turn: bool = False
    model: str = DEFAULT_MODEL
    cache_dir: Path | None = None
    batch_size: int = 64
    device: str = "cpu"
    pca: int | None = None
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    eps: float = divergence.DEFAULT_EPS
    n_boot: int = 200
    level: float = 0.95
    min_instances: int = 10
    folds: int = 5
    seed: int = 0
    cut_at_median: bool = False

    def validate(self) -> None:
        labels = [label for label, _ in self.sets]
        if len(labels) < 2:
            raise UserError("give at least two sets: --set expert=DIR --set student=DIR")
        if len(set(labels)) != len(labels):
            raise UserError(f"set labels must differ; got {', '.join(labels)}")
        if self.reference is None:
            self.reference = labels[0]
        if self.reference not in labels:
            raise UserError(f"--reference {self.reference!r} is not one of the sets ({', '.join(labels)})")
        if self.text not in TEXT_KINDS:
            raise UserError(f"--text {self.text!r}: choose one of {', '.join(TEXT_KINDS)}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise UserError(f"--metric {', '.join(unknown) or '(none)'}: choose from {', '.join(METRICS)}")
        checks = [
            (self.n_boot >= 1, f"--bootstrap {self.n_boot}: need at least 1 replicate (200+ for stable bands)"),
            (0 < self.level < 1, f"--ci {self.level}: give a coverage between 0 and 1, e.g. 0.95"),
            (self.min_instances >= 3, f"--min-instances {self.min_instances}: need at least 3 to fit covariances and cross-validate"),
            (self.folds >= 2, f"--folds {self.folds}: cross-validation needs at least 2 folds"),
            (self.eps >= 0, f"--eps {self.eps}: the covariance ridge cannot be negative"),
            (self.pca is None or self.pca >= 1, f"--pca {self.pca}: give a number of dimensions >= 1"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: give a positive batch size"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


def qualifying_rules(config: ShiftConfig) -> list[str]:
    return [
        "one rollout per instance per set (the instance id is the .traj file's stem; with several, one is picked by --seed)",
        f"an instance counts at turn t only if both '{config.reference}' and the compared set have a turn t"
        + (" (turn 1 dropped by --drop-first-turn)" if config.drop_first_turn else ""),
        f"a turn index is reported only if at least {config.min_instances} instances count at it",
        f"bands: {config.level:.0%} percentile intervals of {config.n_boot} paired bootstrap replicates over instances",
    ]


def _embed(sets: list[TrajectorySet], keys: list[tuple[str, str, int]], config: ShiftConfig) -> tuple[np.ndarray, int]:
    """Vectors of the turns `keys` ((set label, instance, turn)), in order; and how many texts were newly embedded."""
    from rich.progress import Progress

    by_label = {s.label: s for s in sets}
    texts = [by_label[label].turns[iid][t] for label, iid, t in keys]
    with Progress(transient=True) as bar:
        task = bar.add_task("embedding turns", total=None)
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


def _stat(x: np.ndarray, y: np.ndarray, config: ShiftConfig, bandwidth: float):
    """The metrics of one (compared set, turn) on instance indices `idx` (repeats allowed)."""

    def compute(idx: np.ndarray) -> dict[str, float]:
        xs, ys = x[idx], y[idx]
        out = {}
        for name in config.metrics:
            try:
                if name == "frechet":
                    out[name] = divergence.frechet_distance(xs, ys, config.eps)
                elif name == "kl":
                    out[name] = divergence.gaussian_kl(xs, ys, config.eps)
                elif name == "mmd2":
                    out[name] = divergence.mmd2_rbf(xs, ys, bandwidth, ids=idx)
                else:
                    out[name] = divergence.classifier_auc(xs, ys, groups=np.r_[idx, idx], folds=config.folds, seed=config.seed)
            except (ValueError, np.linalg.LinAlgError):
                out[name] = math.nan  # e.g. a resample with too few distinct instances
        return out

    return compute


def _qualifying_turns(ref: TrajectorySet, other: TrajectorySet, min_instances: int, max_turn: float | None) -> list[tuple[TrajectorySet, int, list[str]]]:
    """(other, turn, instance ids) for each turn index that meets the qualifying rules."""
    shared = sorted(set(ref.turns) & set(other.turns))
    turns = sorted({t for iid in shared for t in ref.turns[iid]} | {t for iid in shared for t in other.turns[iid]})
    jobs = []
    for t in turns:
        ids = [iid for iid in shared if t in ref.turns[iid] and t in other.turns[iid]]
        if len(ids) >= min_instances and (max_turn is None or t <= max_turn):
            jobs.append((other, t, ids))
    if not jobs:
        raise UserError(
            f"no turn index has {min_instances}+ instances with that turn in both '{ref.label}' and '{other.label}' "
            f"(they share {len(shared)} instances); check the folders or lower --min-instances"
        )
    return jobs


def _write_tables(out: Path, rows: list[dict], summary: dict) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "shift.csv", buffer.getvalue())
    # Strict JSON: a metric that could not be computed is null, not NaN.
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]
    atomic_write_text(out / "shift.json", json.dumps({**summary, "rows": clean}, indent=1, allow_nan=False))


def run_shift(config: ShiftConfig) -> dict:
    """Run the analysis and write `shift.csv`, `shift.json` and `shift_<metric>.{png,pdf}` to config.out."""
    from rich.progress import Progress
    from threadpoolctl import threadpool_limits

    from covariate_shift_analysis.plots import plot_metric

    config.validate()
    sets = [load_set(label, Path(folder), config.text, drop_first_turn=config.drop_first_turn, seed=config.seed) for label, folder in config.sets]
    ref = next(s for s in sets if s.label == config.reference)
    others = [s for s in sets if s.label != config.reference]

    max_turn = float(np.median([ref.length(iid) for iid in ref.turns])) if config.cut_at_median else None
    jobs = [job for other in others for job in _qualifying_turns(ref, other, config.min_instances, max_turn)]

    # Embed only the turns that are compared.
    keys = sorted({(s.label, iid, t) for other, t, ids in jobs for s in (ref, other) for iid in ids})
    vectors, embedded = _embed(sets, keys, config)
    row_of = {key: i for i, key in enumerate(keys)}
    # One kernel for every turn and set, so MMD² values are comparable along the plot.
    bandwidth = divergence.median_bandwidth(vectors, seed=config.seed)

    rows = []
    # One BLAS thread: the matrices here are small, and BLAS threads that spin-wait for each other
    # made the bootstrap ~10x slower on a busy 2-core machine.
    with threadpool_limits(limits=1), Progress(transient=True) as bar:
        task = bar.add_task("bootstrap", total=len(jobs) * config.n_boot)
        for job_no, (other, t, ids) in enumerate(jobs):
            x = vectors[[row_of[(other.label, iid, t)] for iid in ids]]
            y = vectors[[row_of[(ref.label, iid, t)] for iid in ids]]
            rng = np.random.default_rng([config.seed, job_no])
            results = paired_bootstrap(_stat(x, y, config, bandwidth), len(ids), n_boot=config.n_boot, level=config.level,
                                       rng=rng, on_replicate=lambda: bar.advance(task))
            for name, est in results.items():
                rows.append({"metric": name, "set": other.label, "reference": ref.label, "turn": t, **asdict(est), "level": config.level})
    rows = [{c: row[c] for c in COLUMNS} for row in sorted(rows, key=lambda r: (METRICS.index(r["metric"]), r["set"], r["turn"]))]

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "reference": ref.label,
        "sets": {s.label: {"folder": str(s.folder), "instances": len(s.turns), "instances_with_several_rollouts": len(s.rollouts),
                           "median_length": float(np.median([s.length(i) for i in s.turns]))} for s in sets},
        "settings": {"text": config.text, "drop_first_turn": config.drop_first_turn, "model": config.model, "pca": config.pca,
                     "metrics": config.metrics, "eps": config.eps, "mmd_bandwidth": bandwidth, "bootstrap": config.n_boot,
                     "level": config.level, "min_instances": config.min_instances, "folds": config.folds, "seed": config.seed,
                     "cut_at_median": config.cut_at_median, "max_turn": max_turn},
        "qualifying_rules": qualifying_rules(config),
        "texts_embedded": embedded,
    }
    _write_tables(out, rows, summary)
    summary["rows"] = rows

    subtitle = f"{config.text} text, {Path(config.model).name}" + (f", PCA {config.pca}" if config.pca else "") + f", n ≥ {config.min_instances} per turn, {config.n_boot} bootstrap replicates"
    summary["plots"] = [str(p) for name in config.metrics for p in plot_metric(rows, name, ref.label, out, subtitle)]
    return summary
