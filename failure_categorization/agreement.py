"""`categorize compare A B`: how far two categorizations of the same trajectories agree.

A and B are per-run output folders (`<out>/<label>`, holding `results.jsonl`), typically the same
trajectories judged under `--protocol default` and `--protocol paper`. Records are matched by
trajectory file (resolved path); a trajectory that only one side has, or that one side did not
categorize (`not_judged`), is set aside and counted. On the matched ones: the confusion matrix
(rows A, columns B) and Cohen's kappa (scikit-learn), written to `agreement.csv`,
`agreement.json` and `agreement.png` under the output folder.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

from failure_categorization.taxonomy import Taxonomy
from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text


def load_results(folder: Path) -> tuple[str, dict[str, dict], dict]:
    """(label, {trajectory: record}, summary) of one per-run output folder."""
    path = folder / "results.jsonl"
    if not path.is_file():
        hint = "; give a per-run folder (<out>/<label>), not <out>" if (folder / "summary.json").is_file() else ""
        raise UserError(f"compare: {path} not found{hint}")
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    except (OSError, ValueError) as e:
        raise UserError(f"compare: {path} is not readable JSON Lines ({e}); re-run categorize into that folder")
    if summary.get("mode") == "submitted":
        raise UserError(f"compare: {folder} holds rubric scores (--submitted); agreement is for failure categories")
    by_trajectory: dict[str, dict] = {}
    for record in records:
        if not isinstance(record, dict) or "trajectory" not in record or "instance_id" not in record:
            raise UserError(f"compare: {path} has a line that is not a categorize record")
        by_trajectory[str(Path(record["trajectory"]).resolve())] = record
    return summary.get("label") or folder.name, by_trajectory, summary


def agreement(a: dict[str, dict], b: dict[str, dict], order: list[str] | None = None) -> dict:
    """Confusion matrix and Cohen's kappa over the trajectories both sides categorized."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    both = sorted(set(a) & set(b))
    pairs = [(a[t]["category"], b[t]["category"]) for t in both if a[t].get("category") and b[t].get("category")]
    seen = {c for pair in pairs for c in pair}
    labels = [c for c in (order or []) if c in seen] + sorted(seen - set(order or []))
    set_aside = {
        "only_in_a": len(set(a) - set(b)),
        "only_in_b": len(set(b) - set(a)),
        "not_categorized": len(both) - len(pairs),
    }
    result = {"n": len(pairs), "labels": labels, "set_aside": set_aside}
    if not pairs:
        return {**result, "matrix": [], "observed_agreement": None, "kappa": None}
    ya, yb = [p[0] for p in pairs], [p[1] for p in pairs]
    with warnings.catch_warnings():  # sklearn warns when one category is all there is; labels= covers that
        warnings.simplefilter("ignore", UserWarning)
        matrix = confusion_matrix(ya, yb, labels=labels).tolist()
    observed = sum(x == y for x, y in pairs) / len(pairs)
    # Kappa is undefined (0/0) when both sides put everything in one and the same category.
    kappa = None if len(labels) == 1 else float(cohen_kappa_score(ya, yb, labels=labels))
    return {**result, "matrix": matrix, "observed_agreement": observed, "kappa": kappa}


def table_csv(result: dict, label_a: str, label_b: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([f"{label_a} \\ {label_b}", *result["labels"], "total"])
    for name, row in zip(result["labels"], result["matrix"]):
        writer.writerow([name, *row, sum(row)])
    columns = [sum(col) for col in zip(*result["matrix"])] if result["matrix"] else []
    writer.writerow(["total", *columns, result["n"]])
    return buf.getvalue()


def plot_agreement(result: dict, label_a: str, label_b: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [Taxonomy.label(n) for n in result["labels"]]
    size = max(4.0, 0.55 * len(labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(result["matrix"], cmap="Blues")
    peak = max((v for row in result["matrix"] for v in row), default=0)
    for i, row in enumerate(result["matrix"]):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8, color="white" if value > peak / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    protocols = result.get("a", {}).get("protocol"), result.get("b", {}).get("protocol")
    ax.set_xlabel(f"{label_b} (B" + (f", {protocols[1]} protocol)" if protocols[1] else ")"))
    ax.set_ylabel(f"{label_a} (A" + (f", {protocols[0]} protocol)" if protocols[0] else ")"))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="trajectories")
    aside = sum(result["set_aside"].values())
    ax.set_title(f"Agreement of {label_a} and {label_b} on {result['n']} trajectories judged by both\n"
                 f"Cohen's kappa {'undefined (one category)' if result['kappa'] is None else format(result['kappa'], '.2f')}, observed agreement {result['observed_agreement']:.0%}"
                 + (f"; {aside} set aside" if aside else ""), fontsize=9)
    if result["n"] < 20:
        ax.text(0.5, -0.32, f"few trajectories (n = {result['n']} < 20): kappa is anecdotal", transform=ax.transAxes,
                ha="center", fontsize=8, color="firebrick")
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    tmp.replace(path)
    plt.close(fig)


def compare_runs(folder_a: Path, folder_b: Path, output_dir: Path) -> dict:
    label_a, a, summary_a = load_results(folder_a)
    label_b, b, summary_b = load_results(folder_b)
    if label_a == label_b:
        label_a, label_b = f"A:{label_a}", f"B:{label_b}"
    order = list(dict.fromkeys([*summary_a.get("categories", []), *summary_b.get("categories", [])]))
    result = agreement(a, b, order)
    if not result["n"]:
        raise UserError(f"compare: no trajectory was categorized in both {folder_a} and {folder_b} "
                        f"(set aside: {result['set_aside']}); were they run on the same trajectory folder?")
    result = {"a": {"label": label_a, "folder": str(folder_a), "protocol": summary_a.get("protocol")},
              "b": {"label": label_b, "folder": str(folder_b), "protocol": summary_b.get("protocol")}, **result}
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "agreement.json", json.dumps(result, indent=1))
    atomic_write_text(output_dir / "agreement.csv", table_csv(result, label_a, label_b))
    plot_agreement(result, label_a, label_b, output_dir / "agreement.png")
    return result
