"""`shift --protocol paper`: the OEC paper's covariate-shift protocol.

Closed-form checks on Gaussian samples (known Fréchet distance and KL), the per-replicate re-draw
(seeded; more rollouts per instance widen the band), the three views on a set of known median
length, and the protocol end to end on trajectories written here (branches included)."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from covariate_shift_analysis.bootstrap import paired_bootstrap, redraw_bootstrap
from covariate_shift_analysis.paper import compare_at, view_limits
from covariate_shift_analysis.pipeline import ShiftConfig
from sweagent_oec.cli import app
from sweagent_oec.data.trajectory import HistoryItem, Trajectory, TrajectoryInfo, save_trajectory
from sweagent_oec.errors import UserError

MU, SIGMA, D = np.array([1.0, 0.5]), 1.5, 2
FRECHET = float(MU @ MU + D * (SIGMA - 1) ** 2)  # ‖μ‖² + tr(Σx + Σy − 2(ΣxΣy)^½) with Σx = σ²I, Σy = I
KL = float(0.5 * (D * SIGMA**2 + MU @ MU - D - 2 * D * math.log(SIGMA)))  # KL(N(μ, σ²I) ‖ N(0, I))


def gaussian_blocks(rng, instances: int, rollouts: int, mean, scale) -> list[np.ndarray]:
    return [mean + scale * rng.standard_normal((rollouts, D)) for _ in range(instances)]


def test_replicate_mean_converges_to_the_closed_form():
    errors = {}
    for instances in (40, 3000):
        rng = np.random.default_rng(1)
        ref = gaussian_blocks(rng, instances, 3, 0.0, 1.0)
        student = gaussian_blocks(rng, instances, 3, MU, SIGMA)
        out = compare_at(ref, {"student": student}, metrics=["frechet", "kl"], eps=1e-6, n_boot=40, level=0.95,
                         rng=np.random.default_rng(42), floor="floor")
        errors[instances] = (abs(out[("student", "frechet")]["estimate"] - FRECHET) / FRECHET,
                             abs(out[("student", "kl")]["estimate"] - KL) / KL)
        assert out[("student", "frechet")]["n"] == instances and out[("student", "kl")]["n_boot"] == 40
        assert out[("student", "frechet")]["ci_low"] <= out[("student", "frechet")]["estimate"] <= out[("student", "frechet")]["ci_high"]
        # The noise floor (a second reference rollout against the first) is the same distribution: near 0.
        assert out[("floor", "frechet")]["estimate"] < 0.3 * (40 / instances) ** 0.5 + 0.01
    assert errors[3000][0] < 0.03 and errors[3000][1] < 0.03, errors
    assert errors[3000][0] < errors[40][0] and errors[3000][1] < errors[40][1], errors


def test_rollouts_are_redrawn_in_every_replicate_seeded():
    rng = np.random.default_rng(0)
    ref = gaussian_blocks(rng, 12, 2, 0.0, 1.0)
    two = gaussian_blocks(rng, 12, 2, MU, SIGMA)
    one = [b[:1] for b in two]
    kw = dict(metrics=["frechet"], eps=1e-6, n_boot=200, level=0.9, floor=None)
    wide = compare_at(ref, {"s": two}, rng=np.random.default_rng(42), **kw)[("s", "frechet")]
    narrow = compare_at(ref, {"s": one}, rng=np.random.default_rng(42), **kw)[("s", "frechet")]
    assert wide["ci_high"] - wide["ci_low"] > narrow["ci_high"] - narrow["ci_low"] > 0
    again = compare_at(ref, {"s": two}, rng=np.random.default_rng(42), **kw)[("s", "frechet")]
    other_seed = compare_at(ref, {"s": two}, rng=np.random.default_rng(7), **kw)[("s", "frechet")]
    assert again == wide and other_seed != wide
    # With one rollout everywhere nothing is left to re-draw: every replicate is the same number.
    single = compare_at([b[:1] for b in ref], {"s": one}, rng=np.random.default_rng(42), **kw)
    assert single == {}  # ... and the instances do not qualify (2+ reference rollouts needed)
    picks_seen = []
    redraw_bootstrap(lambda p: picks_seen.append({k: v.copy() for k, v in p.items()}) or {"m": 1.0},
                     {"ref": np.array([1, 3, 2]), "floor": np.array([1, 3, 2])}, n_boot=300, level=0.9,
                     rng=np.random.default_rng(3), distinct={"floor": "ref"})
    for p in picks_seen:  # the second reference rollout always differs from the first; none where only one
        assert p["floor"][0] == -1 and p["ref"][0] == 0 and (p["floor"][1:] != p["ref"][1:]).all()
    assert {int(p["ref"][1]) for p in picks_seen} == {0, 1, 2} and {int(p["floor"][2]) for p in picks_seen} == {0, 1}


def test_three_views_on_a_set_of_known_median():
    views = view_limits([4, 6, 8, 10, 12], max_x=5.5)
    assert views == pytest.approx({"median": 4.0, "median_plus_sd": (8 + math.sqrt(8)) / 2, "full": 5.5})


def test_scipy_bootstrap_matches_a_plain_percentile_bootstrap():
    values = np.random.default_rng(5).exponential(size=40)

    def stat(idx):
        return {"mean": float(values[idx].mean()), "nan_sometimes": math.nan if 0 not in idx else 1.0}

    ours = paired_bootstrap(stat, 40, n_boot=4000, level=0.9, rng=np.random.default_rng(1))
    rng = np.random.default_rng(2)
    manual = np.array([values[rng.integers(0, 40, 40)].mean() for _ in range(4000)])
    low, high = np.percentile(manual, [5, 95])
    assert ours["mean"].estimate == pytest.approx(values.mean())
    se = values.std() / math.sqrt(40)
    assert abs(ours["mean"].ci_low - low) < 0.15 * se and abs(ours["mean"].ci_high - high) < 0.15 * se
    assert ours["mean"].n_boot == 4000
    # Replicates where a metric is NaN are left out of its band and counted (P(0 drawn) ≈ 64%).
    assert 2200 < ours["nan_sometimes"].n_boot < 2900 and ours["nan_sometimes"].ci_low == 1.0


# --- end to end on trajectories ------------------------------------------------------------

ACTIONS = ["ls src", "cat src/parser.py", "grep -n token src/lexer.py", "python -m pytest -q", "sed -n 1,40p src/utils.py",
           "str_replace_editor view /testbed/src/core.py", "git diff", "python reproduce.py"]


def write_rollout(path: Path, n_messages: int, rng: np.random.Generator, drift: float) -> None:
    history = [HistoryItem(role="system", content="You are a software engineering agent.", message_type="system_prompt"),
               HistoryItem(role="user", content="Fix the tokenizer bug.", message_type="observation")]
    while len(history) < n_messages:
        k = len(history)
        if k % 2 == 0:
            action = ACTIONS[(k // 2 + (rng.integers(0, 4) if rng.random() < drift else 0)) % len(ACTIONS)]
            history.append(HistoryItem(role="assistant", content=f"Let me run {action}", message_type="action", action=action))
        else:
            history.append(HistoryItem(role="user", content=f"output {k} {rng.integers(0, 3)}", message_type="observation"))
    save_trajectory(path, Trajectory(history=history, info=TrajectoryInfo(exit_status="submitted")))


@pytest.fixture(scope="module")
def paper_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    rng = np.random.default_rng(0)
    for i in range(4):
        iid = f"repo__pkg.{i:04d}"
        for b, n in enumerate((6, 8, 10)):  # expert rollouts as branches <id>__b<n>: 6, 8 and 10 messages
            write_rollout(root / "expert" / iid / f"{iid}__b{b}.traj", n, rng, 0.0)
        for seed in range(2):  # student rollouts as repeats in one sub-folder per seed
            write_rollout(root / "student" / f"seed{seed}" / iid / f"{iid}.traj", 10, rng, 0.9)
    return root


def test_paper_protocol_end_to_end(paper_sets, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["shift", "--protocol", "paper", "--set", f"expert={paper_sets / 'expert'}",
                                      "--set", f"student={paper_sets / 'student'}", "-o", str(out), "--bootstrap", "30",
                                      "--cache-dir", str(tmp_path / "cache")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "paper protocol" in result.output
    summary = json.loads((out / "shift_paper.json").read_text())
    assert summary["protocol"] == "paper" and summary["settings"]["eps"] == 1e-6 and summary["settings"]["seed"] == 42
    assert summary["sets"]["expert"] == {**summary["sets"]["expert"], "instances": 4, "rollouts": 12, "instances_with_several_rollouts": 4,
                                         "instances_compared": 4}
    # Expert lengths 6, 8, 10 messages on every instance: median 8 (x = 4), SD sqrt(8/3).
    assert summary["views"] == pytest.approx({"median": 4.0, "median_plus_sd": (8 + math.sqrt(8 / 3)) / 2, "full": 3.5})
    with open(out / "shift_paper.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["protocol"] for r in rows} == {"paper"} and {r["metric"] for r in rows} == {"frechet", "kl"}
    student = [r for r in rows if r["set"] == "student" and r["metric"] == "frechet"]
    # Messages 0..9; at 8 and 9 only one expert rollout per instance is left: no point there.
    assert [float(r["x"]) for r in student] == [m / 2 for m in range(8)]
    assert all(r["n"] == "4" and r["below_min"] == "True" for r in student)
    assert [r["n_rollouts"] for r in student] == ["8"] * 8
    floor = {int(r["message"]): float(r["estimate"]) for r in rows if r["set"] == "expert (another rollout)" and r["metric"] == "frechet"}
    assert floor[0] == pytest.approx(0, abs=1e-6)  # the same system prompt everywhere
    for stem in ("shift_paper_frechet", "shift_paper_kl"):
        assert (out / f"{stem}.png").stat().st_size > 10000 and (out / f"{stem}.pdf").is_file()
    assert not (out / "shift.csv").exists()
    hidden = tmp_path / "hidden"
    result = CliRunner().invoke(app, ["shift", "--protocol", "paper", "--set", f"expert={paper_sets / 'expert'}",
                                      "--set", f"student={paper_sets / 'student'}", "-o", str(hidden), "--bootstrap", "5",
                                      "--min-instances", "3", "--hide-below-min", "--cache-dir", str(tmp_path / "cache")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    again = json.loads((hidden / "shift_paper.json").read_text())
    assert again["settings"]["hide_below_min"] and not any(r["below_min"] for r in again["rows"] if r["set"] == "student")
    assert (hidden / "shift_paper_kl.png").stat().st_size > 10000


def test_paper_protocol_refuses_what_it_does_not_do(paper_sets, tmp_path):
    def config(**kw):
        return ShiftConfig(sets=[("e", paper_sets / "expert"), ("s", paper_sets / "student")], out=tmp_path, protocol="paper", **kw)

    for kw, option in ((dict(text="action"), "--text"), (dict(pca=4), "--pca"), (dict(cut_at_median=True), "--cut-at-median"),
                       (dict(metrics=["auc"]), "--metric auc"), (dict(max_rollouts=1), "--max-rollouts 1")):
        with pytest.raises(UserError, match=option):
            config(**kw).validate()
    c = config()
    c.validate()
    assert (c.n_boot, c.eps, c.seed, c.max_rollouts, c.metrics) == (500, 1e-6, 42, 50, ["frechet", "kl"])
    d = ShiftConfig(sets=c.sets, out=tmp_path)
    d.validate()
    assert (d.n_boot, d.eps, d.seed, d.max_rollouts, d.text) == (200, 1e-4, 42, None, "action")  # one seed default everywhere
    with pytest.raises(UserError, match="2\\+ 'e' rollouts per instance"):
        from covariate_shift_analysis.pipeline import run_shift

        run_shift(ShiftConfig(sets=[("e", paper_sets / "student" / "seed0"), ("s", paper_sets / "expert")], out=tmp_path,
                              protocol="paper", cache_dir=tmp_path / "cache"))
