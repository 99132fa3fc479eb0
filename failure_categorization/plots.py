"""Bar plots that put several runs side by side, drawn from their summaries (matplotlib, Agg).

Bars are horizontal so category names read without rotation; lengths are shares of each run's
trajectories (runs differ in size) and each bar is annotated with its count.
"""

from __future__ import annotations

from pathlib import Path

from failure_categorization.summary import category_order
from failure_categorization.taxonomy import Taxonomy


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Render to a temp file and rename, so a half-drawn PNG is never left behind."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    tmp.replace(path)


def _legend_below(ax, n: int) -> None:
    """Under the axes, so it never hides a bar."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(n, 4), frameon=False)


#: A run with fewer trajectories than this gets a note on the figure: its shares are anecdotal.
MIN_TRAJECTORIES = 20


def _included(summaries: dict[str, dict], default: str) -> str:
    """What the runs included and which protocol judged them, from their summaries."""
    selections = list(dict.fromkeys(s.get("selection") or default for s in summaries.values()))
    protocols = list(dict.fromkeys(s.get("protocol") or "default" for s in summaries.values()))
    return f"{'; '.join(selections)} ({' / '.join(protocols)} protocol)"


def _title(ax, title: str, summaries: dict[str, dict], what: str) -> None:
    """The title, and under it (above the bars, so it never hides one) a red note for small runs."""
    small = {label: s["total"] for label, s in summaries.items() if s["total"] < MIN_TRAJECTORIES}
    ax.set_title(title, fontsize=10, pad=16 if small else 6)
    if small:
        runs = ", ".join(f"{label} (n={n})" for label, n in small.items())
        ax.text(0.5, 1.005, f"few trajectories: {runs} < {MIN_TRAJECTORIES}: {what} of so few are anecdotal",
                transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color="firebrick")


def plot_categories(summaries: dict[str, dict], path: Path) -> None:
    plt = _pyplot()
    names = category_order(summaries)
    labels = list(summaries)
    height = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) * max(1.0, len(labels) / 2) + 1.6))
    for j, label in enumerate(labels):
        s = summaries[label]
        total = max(1, s["total"])
        counts = [s["by_category"].get(n, 0) for n in names]
        ys = [i + (j - (len(labels) - 1) / 2) * height for i in range(len(names))]
        bars = ax.barh(ys, [100 * c / total for c in counts], height=height, label=f"{label} (n={s['total']})")
        ax.bar_label(bars, labels=[str(c) if c else "" for c in counts], padding=2, fontsize=8)
    ax.set_yticks(range(len(names)), [Taxonomy.label(n) for n in names])
    ax.invert_yaxis()  # taxonomy order from the top
    ax.set_xlabel("share of the run's trajectories (%)  —  bar labels: counts")
    ax.set_ylabel("failure category")
    _title(ax, f"Failure categories: {_included(summaries, 'unresolved and error runs of the report')}", summaries, "shares")
    ax.margins(x=0.12)
    ax.grid(axis="x", alpha=0.3)
    _legend_below(ax, len(labels))
    _save(fig, path)
    plt.close(fig)


def plot_rubric(summaries: dict[str, dict], path: Path) -> None:
    plt = _pyplot()
    labels = list(summaries)
    first = summaries[labels[0]]["rubric"]
    criteria = list(first["criteria"])
    scale = first["scale"]
    height = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(criteria) * max(1.0, len(labels) / 2) + 1.6))
    for j, label in enumerate(labels):
        crit = summaries[label]["rubric"]["criteria"]
        means = [crit.get(c, {}).get("mean") or 0 for c in criteria]
        ys = [i + (j - (len(labels) - 1) / 2) * height for i in range(len(criteria))]
        bars = ax.barh(ys, means, height=height, label=f"{label} (n={summaries[label]['total']})")
        ax.bar_label(bars, labels=[f"{m:.2f}" if m else "" for m in means], padding=2, fontsize=8)
    ax.set_yticks(range(len(criteria)), [Taxonomy.label(c) for c in criteria])
    ax.invert_yaxis()
    ax.set_xlim(0, scale["max"] + 0.6)
    ax.set_xlabel(f"mean score ({scale['min']} = worst, {scale['max']} = best)")
    ax.set_ylabel("rubric criterion")
    _title(ax, f"Rubric scores: {_included(summaries, 'runs that submitted a patch')}", summaries, "means")
    ax.grid(axis="x", alpha=0.3)
    _legend_below(ax, len(labels))
    _save(fig, path)
    plt.close(fig)
