"""Counting verdicts: the per-run summary JSON, the per-trajectory CSV and the comparison table.

A summary carries the category names in taxonomy order, so `compare` can plot old outputs
without the taxonomy file that produced them.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

from failure_categorization.run import Record
from failure_categorization.taxonomy import Taxonomy
from sweagent_oec.files import atomic_write_text

NOT_JUDGED = "not_judged"


def summarize(label: str, mode: str, records: list[Record], taxonomy: Taxonomy, *, judge_model: str | None,
              missing: list[str], cost_this_run: float, unpriced: bool, protocol: str = "default",
              selection: str | None = None) -> dict:
    by_category: dict[str, int] = {}
    if mode == "unresolved":  # every name present (zeros too), so runs line up in tables
        counts = Counter(r.category or NOT_JUDGED for r in records)
        by_category = {name: counts.get(name, 0) for name in [*taxonomy.names, NOT_JUDGED]}
    summary = {
        "label": label,
        "mode": mode,
        "judge_model": judge_model,
        "protocol": protocol,
        "selection": selection,
        "total": len(records),
        "instances": len({r.instance_id for r in records}),
        "instances_with_several_trajectories": sum(n > 1 for n in Counter(r.instance_id for r in records).values()),
        "categories": taxonomy.names,
        "by_category": by_category,
        "by_source": {source: sum(r.source == source for r in records) for source in ("prerule", "judge", "not_judged")},
        "by_prerule": dict(Counter(r.prerule for r in records if r.prerule)),
        "by_repo": dict(sorted(Counter(r.repo for r in records).items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_repo_category": _by_repo_category(records),
        "by_exit_status": dict(Counter(r.exit_status or "none" for r in records)),
        "unknown_categories": sum(r.judge_status == "unknown_category" for r in records),
        "unparseable_answers": sum(r.judge_status == "unparseable" for r in records),
        "empty_answers": sum(r.judge_status == "empty" for r in records),
        "not_judged_reasons": dict(Counter(_reason_kind(r.not_judged_reason) for r in records if r.not_judged_reason)),
        "cached": sum(r.cached for r in records),
        "missing_trajectories": missing,
        "tokens": sum(r.tokens for r in records),
        "cost": round(sum(r.cost for r in records), 6),
        "cost_this_run": round(cost_this_run, 6),
        "cost_note": "the judge model has no litellm price: its cost is counted as 0" if unpriced else None,
    }
    if mode == "submitted":
        summary["rubric"] = _rubric(records, taxonomy)
    return summary


def _by_repo_category(records: list[Record]) -> dict[str, dict[str, int]]:
    table: dict[str, Counter] = {}
    for r in records:
        if r.category:
            table.setdefault(r.repo, Counter())[r.category] += 1
    return {repo: dict(c) for repo, c in sorted(table.items())}


def _reason_kind(reason: str) -> str:
    """`judge failed: RateLimitError after 5 attempts` -> `judge failed` (for counting)."""
    return reason.split(":", 1)[0]


def _scores(records: list[Record], name: str) -> list[int]:
    return [r.scores[name] for r in records if r.scores and r.scores.get(name) is not None]


def _mean(values: list[int]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _rubric(records: list[Record], taxonomy: Taxonomy) -> dict:
    names = [c.name for c in taxonomy.rubric.criteria]
    criteria = {}
    for name in names:
        values = _scores(records, name)
        criteria[name] = {"n": len(values), "mean": _mean(values),
                          "distribution": {str(k): v for k, v in sorted(Counter(values).items())}}
    # Resolved and unresolved submissions side by side: which habits go with success.
    outcomes = sorted({r.evaluation for r in records if r.evaluation})
    by_evaluation = {o: {name: _mean(_scores([r for r in records if r.evaluation == o], name)) for name in names}
                     for o in outcomes}
    return {"scale": taxonomy.rubric.scale.model_dump(), "criteria": criteria, "mean_by_evaluation": by_evaluation}


def records_csv(records: list[Record], taxonomy: Taxonomy, mode: str) -> str:
    criteria = [c.name for c in taxonomy.rubric.criteria] if mode == "submitted" else []
    columns = ["instance_id", "repo", "exit_status", "evaluation", "category", "source", "prerule", "confidence",
               *criteria, "tokens", "cost", "judge_status", "not_judged_reason", "rationale", "trajectory"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        row = r.model_dump()
        row.update({name: (r.scores or {}).get(name) for name in criteria})
        writer.writerow(row)
    return buf.getvalue()


def write_run(folder: Path, records: list[Record], summary: dict, taxonomy: Taxonomy) -> None:
    """results.jsonl, results.csv and summary.json; each file replaced whole (atomic)."""
    atomic_write_text(folder / "results.jsonl", "".join(r.model_dump_json() + "\n" for r in records))
    atomic_write_text(folder / "results.csv", records_csv(records, taxonomy, summary["mode"]))
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=1))


def comparison_csv(summaries: dict[str, dict]) -> str:
    """Rows: categories (or rubric criteria); columns: runs. Counts, or mean scores for the rubric."""
    labels = list(summaries)
    buf = io.StringIO()
    writer = csv.writer(buf)
    first = next(iter(summaries.values()))
    if first["mode"] == "submitted":
        writer.writerow(["criterion", *(f"{label} mean" for label in labels)])
        for name in first["rubric"]["criteria"]:
            writer.writerow([name, *(summaries[l]["rubric"]["criteria"].get(name, {}).get("mean") for l in labels)])
    else:
        writer.writerow(["category", *labels])
        for name in category_order(summaries):
            writer.writerow([name, *(summaries[l]["by_category"].get(name, 0) for l in labels)])
        writer.writerow(["total", *(summaries[l]["total"] for l in labels)])
    return buf.getvalue()


def category_order(summaries: dict[str, dict]) -> list[str]:
    """Taxonomy order, then names only some runs have (another taxonomy), then not_judged."""
    names: list[str] = []
    for s in summaries.values():
        for name in [*s["categories"], *s["by_category"]]:
            if name not in names and name != NOT_JUDGED:
                names.append(name)
    if any(s["by_category"].get(NOT_JUDGED) for s in summaries.values()):
        names.append(NOT_JUDGED)
    return names
