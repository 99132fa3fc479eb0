"""`categorize --protocol paper`, `categorize compare A B`, and several trajectories per instance.

The judge is the loopback OpenAI server; one of its scripts echoes back what it was shown, so the
paper-protocol input can be checked field by field."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest

from failure_categorization.agreement import agreement
from failure_categorization.judge import parse_paper
from failure_categorization.taxonomy import load_taxonomy
from sweagent_oec.data.trajectory import HistoryItem, Step, Trajectory, TrajectoryInfo, save_trajectory, trajectory_path
from sweagent_oec.tasks.instances import Instance
from tests.openai_server import OpenAIServer, Reply
from tests.test_categorize import cli

TAXONOMY = load_taxonomy()
KEY_ENV = "CATEGORIZE_TEST_JUDGE_KEY"
CLI = Path(sys.executable).parent / "sweagent-oec"
PROBLEM = "".join(f"Sentence {i} of a long issue text about the tokenizer. " for i in range(80))  # ~4000 chars


def long_traj(n_steps: int = 25, exit_status: str = "exit_cost") -> Trajectory:
    steps = [Step(action=f"cat src/file_{i}.py | head -n {i}  # action {i} " + "x" * 300,
                  observation=f"OBS{i}:" + "".join(f"<{i}.{j}>" for j in range(120)), thought=f"thought {i}",
                  model_role="student") for i in range(1, n_steps + 1)]
    history = [HistoryItem(role="system", content="sys", message_type="system_prompt"),
               HistoryItem(role="user", content=f"<issue>{PROBLEM}</issue>", message_type="observation")]
    return Trajectory(trajectory=steps, history=history, info=TrajectoryInfo(exit_status=exit_status, submission="diff --git a/x b/x\n"))


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1].strip("\n") for i in range(1, len(parts), 2)}


def judge_args(server: OpenAIServer) -> list[str]:
    return ["--judge-model", "openai/judge-m", "--judge-api-base", server.url, "--judge-api-key-env", KEY_ENV,
            "--retry-backoff", "0.01", "--no-progress"]


def echo(request: dict) -> Reply:
    """A judge that repeats what it was shown, then names a category on its last line."""
    return Reply(content=request["messages"][1]["content"] + "\n\ntool_error")


def test_paper_protocol_input_has_exactly_the_papers_fields(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    iid = "owner__repo.abc.pr_1"
    save_trajectory(trajectory_path(tmp_path / "trajs", iid), long_traj())
    # The same action five times at the end: the default protocol's infinite_loop pre-rule would fire.
    loop = long_traj(8, "exit_cost")
    loop.trajectory[-5:] = [Step(action="ls", observation="a b")] * 5
    save_trajectory(trajectory_path(tmp_path / "trajs", "owner__repo.abc.pr_2"), loop)
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps([Instance(instance_id=iid, repo="owner/repo", problem_statement=PROBLEM,
                                              patch="--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n").model_dump()]))
    with OpenAIServer(echo) as server:
        cli("--all", str(tmp_path / "trajs"), "-o", str(tmp_path / "out"), "--protocol", "paper", "--instances", str(instances),
            *judge_args(server))
    assert len(server.requests) == 2  # no pre-rule: the looping run went to the judge too
    request = next(r for r in server.requests if "OBS25" in r["messages"][1]["content"])
    assert request["temperature"] == 1 and "response_format" not in request
    system, user = request["messages"][0]["content"], request["messages"][1]["content"]
    assert all(f"- {c.name}: {c.description}" in system for c in TAXONOMY.categories)
    got = sections(user)
    assert list(got) == ["Exit status", "Tools the agent had", "Task (first 1000 characters)", "The last 20 actions",
                         "The last 20 observations (each cut to 200 characters)"]
    assert got["Exit status"].startswith("exit_cost: the run hit its cost or call limit")
    assert "str_replace_editor" in got["Tools the agent had"] and "submit" in got["Tools the agent had"]
    assert got["Task (first 1000 characters)"] == PROBLEM[:1000]
    traj = long_traj()
    assert got["The last 20 actions"] == "\n".join(f"{i}. {s.action}" for i, s in enumerate(traj.trajectory[5:], 6))
    assert got["The last 20 observations (each cut to 200 characters)"] == "\n".join(
        f"{i}. {s.observation[:200]}" for i, s in enumerate(traj.trajectory[5:], 6))
    for absent in ("diff --git", "Gold patch", "Outline", "thought 25", "OBS5:"):
        assert absent not in user
    records = [json.loads(line) for line in (tmp_path / "out" / "trajs" / "results.jsonl").read_text().splitlines()]
    assert {r["category"] for r in records} == {"tool_error"} and {r["source"] for r in records} == {"judge"}
    assert records[0]["rationale"].startswith("## Exit status")  # the free text above the category line
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]["trajs"]
    assert summary["protocol"] == "paper" and summary["by_source"]["prerule"] == 0
    assert summary["selection"].startswith("all trajectories")


@pytest.mark.parametrize("answer, category, status, raw", [
    ("The agent kept listing directories.\nIt never edited a file.\n\nendless_file_reading", "endless_file_reading", "ok", None),
    ("It looped.\n**Category: Infinite loop.**\n", "infinite_loop", "ok", None),
    ("Misread the task.\n`misunderstood-problem-statement`", "misunderstood_problem_statement", "ok", None),
    ("It failed because of a tool_error early on.\nflaky_network", "other", "unknown_category", "flaky_network"),
    ("wrong_solution\nThe fix was wrong, I think.", "other", "unknown_category", "The fix was wrong, I think."),
    ("", "other", "empty", None),
    ("  \n\n ", "other", "empty", None),
])
def test_free_text_answers_parse_on_their_last_line(answer, category, status, raw):
    verdict = parse_paper(answer, TAXONOMY.names)
    assert (verdict.category, verdict.status, verdict.raw_category) == (category, status, raw)


def write_results(folder: Path, label: str, pairs: dict[str, str | None], protocol: str) -> None:
    folder.mkdir(parents=True)
    lines = [json.dumps({"instance_id": t.split("/")[0], "repo": "o/r", "category": c, "trajectory": f"/runs/{t}.traj",
                         "source": "judge" if c else "not_judged"}) for t, c in pairs.items()]
    (folder / "results.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(json.dumps({"label": label, "mode": "unresolved", "protocol": protocol,
                                                     "categories": TAXONOMY.names, "by_category": {}, "total": len(pairs)}))


#: A fixed set: 10 trajectories both judged, one only in A, one not judged in B.
A = ["tool_error"] * 4 + ["infinite_loop"] * 3 + ["wrong_solution"] * 3
B = ["tool_error"] * 3 + ["infinite_loop"] * 4 + ["wrong_solution"] * 2 + ["tool_error"]


def test_agreement_table_on_a_fixed_set(tmp_path):
    write_results(tmp_path / "a", "oec", {**{f"i{k}/t": c for k, c in enumerate(A)}, "only_a/t": "other", "nj/t": "other"}, "default")
    write_results(tmp_path / "b", "oec", {**{f"i{k}/t": c for k, c in enumerate(B)}, "nj/t": None}, "paper")
    result = cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "agree"))
    data = json.loads((tmp_path / "agree" / "agreement.json").read_text())
    assert data["labels"] == ["wrong_solution", "tool_error", "infinite_loop"]  # taxonomy order
    assert data["matrix"] == [[2, 1, 0], [0, 3, 1], [0, 0, 3]]
    assert data["set_aside"] == {"only_in_a": 1, "only_in_b": 0, "not_categorized": 1} and data["n"] == 10
    # Cohen's kappa by hand: p_o = 8/10; p_e = (3·2 + 4·4 + 3·4) / 100 = 0.34.
    assert data["observed_agreement"] == pytest.approx(0.8)
    assert data["kappa"] == pytest.approx((0.8 - 0.34) / (1 - 0.34))
    assert (data["a"]["protocol"], data["b"]["protocol"]) == ("default", "paper")
    with open(tmp_path / "agree" / "agreement.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["A:oec \\ B:oec", "wrong_solution", "tool_error", "infinite_loop", "total"]
    assert rows[2] == ["tool_error", "0", "3", "1", "4"] and rows[-1] == ["total", "2", "4", "4", "10"]
    assert "Cohen's kappa 0.697" in " ".join(result.output.split()) and (tmp_path / "agree" / "agreement.png").stat().st_size > 5000
    same = agreement({"t": {"category": "other"}}, {"t": {"category": "other"}})
    assert same["kappa"] is None and same["observed_agreement"] == 1.0


def test_compare_bad_inputs_are_one_line(tmp_path):
    write_results(tmp_path / "a", "a", {"x/t": "other"}, "default")
    write_results(tmp_path / "b", "b", {"y/t": "other"}, "paper")
    for args, message in (([str(tmp_path / "a"), str(tmp_path)], "results.jsonl not found"),
                          ([str(tmp_path / "a"), str(tmp_path / "b")], "no trajectory was categorized in both")):
        proc = subprocess.run([str(CLI), "categorize", "compare", *args, "-o", str(tmp_path / "o")], capture_output=True, text=True)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
        assert len([l for l in proc.stderr.splitlines() if l.startswith("error:")]) == 1
    assert not (tmp_path / "o").exists()


def test_several_trajectories_per_instance_are_all_categorized(tmp_path):
    iid = "owner__repo.abc.pr_1"
    trajs = tmp_path / "trajs"
    loop = long_traj(6, "exit_cost")
    loop.trajectory[-5:] = [Step(action="ls", observation="a b")] * 5
    for path in (trajs / iid / f"{iid}__b0.traj", trajs / iid / f"{iid}__b1.traj", trajs / "seed1" / iid / f"{iid}.traj",
                 trajs / "owner__repo.abc.pr_2" / "owner__repo.abc.pr_2.traj"):
        save_trajectory(path, loop)
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"ids_resolved": ["owner__repo.abc.pr_2"], "ids_unresolved": [iid], "ids_error": []}))
    result = cli(str(trajs), "-r", str(report), "-o", str(tmp_path / "out"), "--prerules-only", "--no-progress")
    records = [json.loads(line) for line in (tmp_path / "out" / "trajs" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3 and {r["instance_id"] for r in records} == {iid}
    assert {Path(r["trajectory"]).name for r in records} == {f"{iid}__b0.traj", f"{iid}__b1.traj", f"{iid}.traj"}
    assert {r["category"] for r in records} == {"infinite_loop"} and {r["evaluation"] for r in records} == {"unresolved"}
    summary = json.loads((tmp_path / "out" / "trajs" / "summary.json").read_text())
    assert (summary["total"], summary["instances"], summary["instances_with_several_trajectories"]) == (3, 1, 1)
    assert summary["missing_trajectories"] == [] and "3 trajectories of 1 instances (1 with several" in " ".join(result.output.split())
    assert summary["selection"] == "unresolved and error runs of the report"


def test_paper_protocol_refuses_what_it_does_not_do(tmp_path):
    save_trajectory(trajectory_path(tmp_path / "t", "a__b.c"), long_traj(3))
    for extra, option in ((["--submitted"], "--submitted"), (["--prerules-only"], "--prerules-only"),
                          (["--response-format", "json_schema"], "--response-format"), (["--last-actions", "30"], "--last-actions")):
        proc = subprocess.run([str(CLI), "categorize", str(tmp_path / "t"), "--all", "-o", str(tmp_path / "o"), "--protocol", "paper",
                               "--judge-model", "openai/x", *extra], capture_output=True, text=True)
        assert proc.returncode != 0 and f"{option} is not part of the paper protocol" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_both_protocols_on_one_run_then_compare(tmp_path, monkeypatch):
    """The workflow the README shows: the same trajectories under each protocol, then their agreement."""
    monkeypatch.setenv(KEY_ENV, "sk-test")
    monkeypatch.chdir(tmp_path)  # relative folders, as a user types them
    for k in range(4):
        save_trajectory(trajectory_path(Path("trajs"), f"o__r.x.pr_{k}"), long_traj(3 + k))

    def judge(request: dict) -> Reply:
        k = int(re.search(r"The last (\d+) actions", request["messages"][1]["content"])[1])  # = steps of the run
        if "response_format" in request or "JSON" in request["messages"][0]["content"]:
            return Reply(content=json.dumps({"category": "tool_error" if k < 5 else "wrong_solution", "rationale": "r", "confidence": 0.9}))
        return Reply(content="Some reasoning.\ntool_error")

    with OpenAIServer(judge) as server:
        cli("trajs", "--all", "-o", "default", "--no-prerules", *judge_args(server))
        cli("trajs", "--all", "-o", "paper", "--protocol", "paper", *judge_args(server))
    result = cli("compare", "default/trajs", "paper/trajs", "-o", "agree")
    data = json.loads(Path("agree/agreement.json").read_text())
    assert data["n"] == 4 and data["set_aside"] == {"only_in_a": 0, "only_in_b": 0, "not_categorized": 0}
    assert data["labels"] == ["wrong_solution", "tool_error"] and data["matrix"] == [[0, 2], [0, 2]]
    assert (data["a"]["protocol"], data["b"]["protocol"]) == ("default", "paper") and "trajs" in result.output
