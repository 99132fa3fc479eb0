"""Figures, written as PNG and PDF.

- `plot_metric` (default protocol): the metric against turn index for each compared set, with its
  bootstrap band, over a small panel of how many instances qualified at each turn.
- `plot_paper` (paper protocol): the same against x = message index / 2 in the paper's three
  views side by side (cut at the reference's median length, at median + 1 SD, full), with the
  reference-vs-reference noise floor.

Every figure names its protocol, and says so on the figure when a point rests on fewer instances
than the stated minimum.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sweagent_oec.files import as_umask_allows

#: metric -> (axis label, value that means "no shift", its legend text)
METRIC_LABELS = {
    "frechet": ("Fréchet distance", 0.0, "no shift"),
    "kl": ("Gaussian KL(set ‖ reference) [nats]", 0.0, "no shift"),
    "mmd2": ("MMD² (RBF kernel)", 0.0, "no shift"),
    "auc": ("classifier two-sample AUC", 0.5, "chance (no shift)"),
}
METRIC_TITLES = {"frechet": "Fréchet distance", "kl": "Gaussian KL divergence", "mmd2": "MMD²", "auc": "Classifier two-sample AUC"}
#: Below this many instances per point, a figure warns that its bands are not to be trusted.
RECOMMENDED_MIN = 10
VIEW_TITLES = {"median": "cut at the reference's median length", "median_plus_sd": "cut at median + 1 SD", "full": "full length"}


def _save(fig, path: Path) -> None:
    """Save through a temp file + rename, so a reader never sees half an image."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    as_umask_allows(fd)  # savefig rewrites the file in place, keeping this mode
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _write(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for suffix in (".png", ".pdf"):
        path = Path(out_dir) / f"{stem}{suffix}"
        _save(fig, path)
        paths.append(path)
    return paths


def plot_metric(rows: list[dict], metric: str, reference: str, out_dir: Path, subtitle: str) -> list[Path]:
    """Plot the `rows` (tidy: metric, set, turn, n, estimate, ci_low, ci_high) of one metric."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    rows = [r for r in rows if r["metric"] == metric]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    level = rows[0]["level"] if rows else 0.95
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(7.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    label, baseline, baseline_text = METRIC_LABELS[metric]
    for i, name in enumerate(sets):
        mine = sorted((r for r in rows if r["set"] == name), key=lambda r: r["turn"])
        turns = [r["turn"] for r in mine]
        color = f"C{i}"
        ax.plot(turns, [r["estimate"] for r in mine], marker="o", ms=3.5, color=color, label=f"{name} vs {reference}")
        ax.fill_between(turns, [r["ci_low"] for r in mine], [r["ci_high"] for r in mine], color=color, alpha=0.2, lw=0)
        ax_n.plot(turns, [r["n"] for r in mine], drawstyle="steps-mid", color=color)
    ax.axhline(baseline, color="0.5", lw=0.8, ls="--", label=baseline_text)
    ax.set_ylabel(label)
    ax.set_title(f"{METRIC_TITLES[metric]} to the reference set '{reference}', by turn\n{subtitle}", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(color="0.5", alpha=0.3, lw=0))  # one entry explains every set's shading
    labels.append(f"shaded: {level:.0%} bootstrap band")
    ax.legend(handles, labels, loc="best", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    _few_instances_note(ax, [r["n"] for r in rows])
    ax_n.set_ylabel("instances (n)")
    ax_n.set_xlabel("turn index")
    ax_n.set_ylim(bottom=0)
    ax_n.grid(alpha=0.3)
    ax_n.xaxis.get_major_locator().set_params(integer=True)
    fig.align_ylabels()
    paths = _write(fig, out_dir, f"shift_{metric}")
    plt.close(fig)
    return paths


def _few_instances_note(ax, ns: list[int], minimum: int = RECOMMENDED_MIN, hollow: bool = False) -> None:
    """A red line on the figure when any point drawn rests on fewer than `minimum` instances."""
    few = [n for n in ns if n < minimum]
    if few:
        what = "hollow points" if hollow else f"{len(few)} of {len(ns)} points"
        ax.text(0.01, 0.99, f"few instances: {what} rest on n < {minimum}\n(lowest n = {min(few)}): bands unreliable",
                transform=ax.transAxes, va="top", ha="left", fontsize=7.5, color="firebrick",
                bbox=dict(facecolor="white", edgecolor="firebrick", alpha=0.85, lw=0.6))


def plot_paper(rows: list[dict], metric: str, reference: str, floor: str, views: dict[str, float], out_dir: Path,
               subtitle: str, min_instances: int, hide_below_min: bool) -> list[Path]:
    """One figure per metric: the paper protocol's three views side by side."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = [r for r in rows if r["metric"] == metric and not (hide_below_min and r["below_min"])]
    sets = [s for s in dict.fromkeys(r["set"] for r in rows) if s != floor]
    colors = {floor: "0.45", **{s: f"C{i}" for i, s in enumerate(sets)}}
    label, baseline, _ = METRIC_LABELS[metric]
    values = [v for r in rows for v in (r["ci_low"], r["ci_high"], r["estimate"]) if v == v]
    log = bool(values) and min(values) > 0 and max(values) / min(values) > 100
    fig, axes = plt.subplots(2, 3, figsize=(14, 5.8), sharex="col", sharey="row", gridspec_kw={"height_ratios": [3, 1]})
    for col, view in enumerate(("median", "median_plus_sd", "full")):
        ax, ax_n = axes[0, col], axes[1, col]
        for name in [floor, *sets]:
            mine = sorted((r for r in rows if r["set"] == name and r["x"] <= views[view]), key=lambda r: r["x"])
            if not mine:
                continue
            xs = [r["x"] for r in mine]
            color = colors[name]
            ax.plot(xs, [r["estimate"] for r in mine], color=color, lw=1.2, ls="--" if name == floor else "-")
            ax.fill_between(xs, [r["ci_low"] for r in mine], [r["ci_high"] for r in mine], color=color, alpha=0.18, lw=0)
            solid = [r for r in mine if not r["below_min"]]
            hollow = [r for r in mine if r["below_min"]]
            ax.plot([r["x"] for r in solid], [r["estimate"] for r in solid], "o", ms=3, color=color)
            ax.plot([r["x"] for r in hollow], [r["estimate"] for r in hollow], "o", ms=3.5, mfc="white", color=color)
            ax_n.plot(xs, [r["n"] for r in mine], drawstyle="steps-mid", color=color, ls="--" if name == floor else "-")
        ax.axhline(baseline, color="0.3", lw=0.6, ls=":")
        if log:
            ax.set_yscale("log")
        ax.set_title(f"{VIEW_TITLES[view]} (x ≤ {views[view]:.2f})", fontsize=9)
        ax.grid(alpha=0.3)
        ax_n.axhline(min_instances, color="firebrick", lw=0.6, ls=":")
        ax_n.set_xlabel("x = message index / 2")
        ax_n.set_ylim(bottom=0)
        ax_n.grid(alpha=0.3)
        ax_n.xaxis.get_major_locator().set_params(integer=True)
        if col == 0:
            ax.set_ylabel(label + (" (log)" if log else ""))
            ax_n.set_ylabel("instances (n)")
        _few_instances_note(ax, [r["n"] for r in rows if r["x"] <= views[view]], min_instances, hollow=True)
    if not rows:
        axes[0, 1].text(0.5, 0.5, f"nothing drawn: every point rests on fewer than {min_instances} instances\n"
                        "(--hide-below-min; the table keeps them)", transform=axes[0, 1].transAxes, ha="center",
                        va="center", fontsize=9, color="firebrick")
    level = rows[0]["level"] if rows else 0.95
    handles = [Line2D([], [], color=colors[s], lw=1.2) for s in sets]
    labels = [f"{s} vs {reference}" for s in sets]
    handles += [Line2D([], [], color=colors[floor], lw=1.2, ls="--"), Patch(color="0.5", alpha=0.3, lw=0),
                Line2D([], [], color="firebrick", lw=0.6, ls=":")]
    labels += [f"noise floor: {floor} vs {reference}", f"shaded: {level:.0%} band of the replicates",
               f"n = {min_instances} (stated minimum)"]
    if any(r["below_min"] for r in rows):  # only when some are drawn
        handles.append(Line2D([], [], marker="o", ls="", mfc="white", color="0.3"))
        labels.append(f"hollow: fewer than {min_instances} instances")
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.08))
    note = f"; points with n < {min_instances} left out" if hide_below_min else ""
    fig.suptitle(f"{METRIC_TITLES[metric]} to the reference set '{reference}', by message\n{subtitle}{note}", fontsize=10)
    fig.align_ylabels()
    paths = _write(fig, out_dir, f"shift_paper_{metric}")
    plt.close(fig)
    return paths
