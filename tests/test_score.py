"""`sweagent-oec score`: resolve rate, its binomial interval, the exit-status table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sweagent_oec.errors import UserError
from sweagent_oec.harness.score import score


def _traj(folder, iid, status):
    (folder / iid).mkdir(parents=True)
    (folder / iid / f"{iid}.traj").write_text(json.dumps({"info": {"exit_status": status}, "trajectory": []}))


def _setup(tmp_path):
    report = {"total": 3, "resolved": 2, "unresolved": 0, "error": 1, "ids_resolved": ["a", "b"], "ids_unresolved": [],
              "ids_error": ["c"], "errors": {"c": "empty_patch: x"}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    shard0, shard1 = tmp_path / "s0", tmp_path / "s1"
    _traj(shard0, "a", "submitted")
    _traj(shard0, "b", "submitted")
    _traj(shard1, "c", "exit_cost")
    _traj(shard1, "d", "exit_format")  # never submitted a patch: not in the report, still attempted
    (shard1 / "e").mkdir()
    (shard1 / "e" / "e.traj").write_text("{not json")  # unreadable: not counted
    return tmp_path / "report.json", [shard0, shard1]


def test_rate_interval_and_exit_statuses(tmp_path):
    from scipy.stats import binomtest

    report, shards = _setup(tmp_path)
    result = score(report, shards)
    assert (result.resolved, result.total) == (2, 4)  # d has no report: unresolved, not left out
    low, high = binomtest(2, 4).proportion_ci(0.95, method="exact")
    assert (result.low, result.high) == pytest.approx((low, high))
    assert result.exit_statuses == {"submitted": 2, "exit_cost": 1, "exit_format": 1}
    lines = result.lines()
    assert lines[0] == f"resolved 2/4 = 50.0% (95% CI {100 * low:.1f}-{100 * high:.1f}%, Clopper-Pearson)"
    assert lines[1].split() == ["exit", "status", "count"] and lines[2].split() == ["submitted", "2"]
    # The benchmark's size as the denominator.
    assert score(report, shards, total=10).total == 10
    with pytest.raises(UserError, match="--total 3 is below the 4 instances"):
        score(report, shards, total=3)


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"resolved": True}))
    with pytest.raises(UserError, match="not an aggregate evaluation report.json"):
        score(tmp_path / "r.json")
    with pytest.raises(UserError, match="no such trajectory folder"):
        score(_setup(tmp_path)[0], [tmp_path / "missing"])


def test_score_command(tmp_path):
    report, shards = _setup(tmp_path)
    args = [sys.executable, "-m", "sweagent_oec.cli", "score", str(report)] + [a for s in shards for a in ("-t", str(s))]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("resolved 2/4 = 50.0% (95% CI 6.8-93.2%, Clopper-Pearson)"), done.stdout
    bad = subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "score", str(tmp_path / "nope.json")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "not an aggregate evaluation report.json" in bad.stderr
