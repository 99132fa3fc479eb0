"""Failure categorization against the loopback OpenAI server acting as the judge.

Trajectories are real .traj files written here with SWE-agent exit statuses, next to a real
aggregate report.json; the judge is a real HTTP server that litellm talks to.
"""

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
from typer.testing import CliRunner

from failure_categorization.inputs import repo_of
from failure_categorization.judge import JudgeConfig, ask, extract_json, failure_schema, parse_failure, parse_rubric
from failure_categorization.judge_input import InputConfig, build_messages, render_case, reverse_patch
from failure_categorization.prerules import apply_prerules
from failure_categorization.taxonomy import load_taxonomy
from sweagent_oec.cli import app
from sweagent_oec.data.trajectory import HistoryItem, Step, Trajectory, TrajectoryInfo, save_trajectory, trajectory_path
from sweagent_oec.errors import UserError
from sweagent_oec.tasks.instances import Instance
from tests.openai_server import OpenAIServer, Reply

ROOT = Path(__file__).resolve().parents[1]
TAXONOMY = load_taxonomy()
KEY_ENV = "CATEGORIZE_TEST_JUDGE_KEY"
SECRET = "sk-test-secret-never-written-0123456789"


# --- building real trajectories ------------------------------------------------------------


def make_traj(iid: str, exit_status: str | None, actions: list[tuple[str, str]], submission: str = "") -> Trajectory:
    return Trajectory(
        trajectory=[Step(action=a, observation=o, thought=f"thinking about {a[:20]}", model_role="student", model_name="student-m")
                    for a, o in actions],
        history=[HistoryItem(role="system", content="You are a helpful assistant.", message_type="system_prompt"),
                 HistoryItem(role="user", content=f"<issue>\nISSUE {iid}: the parser drops the last token.\n</issue>",
                             message_type="observation")],
        info=TrajectoryInfo(exit_status=exit_status, submission=submission),
    )


PATCH = "diff --git a/src/parse.py b/src/parse.py\n--- a/src/parse.py\n+++ b/src/parse.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"
EXPLORE = [("ls", "src tests"), ("str_replace_editor view /repo/src/parse.py", "1 x = 1"), ("python -m pytest -q", "1 failed")]

#: instance_id -> (exit status, actions, submission); repos alpha and beta.
CASES = {
    "owner__alpha.abc123.pr_1": ("exit_context", EXPLORE + [("find / -name '*.py'", "/x.py\n" * 6000)], ""),
    "owner__alpha.abc123.pr_2": ("exit_cost", EXPLORE + [("cat src/parse.py", "x = 1")] * 6, ""),
    "owner__alpha.abc123.pr_3": ("exit_format", EXPLORE, ""),
    "owner__beta.abc123.pr_4": ("submitted", EXPLORE + [("str_replace_editor str_replace /repo/src/parse.py", "edited")], PATCH),
    "owner__beta.abc123.pr_5": ("submitted (exit_cost)", EXPLORE, PATCH),
    "owner__beta.abc123.pr_6": ("submitted", EXPLORE, PATCH),  # resolved: not picked by default
    "owner__beta.abc123.pr_7": ("exit_command_timeout", EXPLORE + [("python -m pytest", "Timeout")], ""),
}
REPORT = {
    "total": 8, "resolved": 1, "unresolved": 6, "error": 1,
    "ids_resolved": ["owner__beta.abc123.pr_6"],
    "ids_unresolved": ["owner__alpha.abc123.pr_1", "owner__alpha.abc123.pr_2", "owner__alpha.abc123.pr_3",
                       "owner__beta.abc123.pr_4", "owner__beta.abc123.pr_5", "owner__gamma.abc123.pr_9"],  # pr_9: no .traj
    "ids_error": ["owner__beta.abc123.pr_7"],
}
JUDGED = ["owner__beta.abc123.pr_4", "owner__beta.abc123.pr_5", "owner__beta.abc123.pr_7"]


def write_run(folder: Path, cases: dict = CASES, report: dict = REPORT) -> tuple[Path, Path]:
    trajs = folder / "trajs"
    for iid, (status, actions, submission) in cases.items():
        save_trajectory(trajectory_path(trajs, iid), make_traj(iid, status, actions, submission))
    report_path = folder / "eval" / "report.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report))
    return trajs, report_path


def issue_id(request: dict) -> str:
    return re.search(r"ISSUE (\S+):", request["messages"][1]["content"])[1]


def judge_by_issue(answers: dict[str, str], default: str = '{"category": "other", "rationale": "?", "confidence": 0.1}'):
    return lambda request: Reply(content=answers.get(issue_id(request), default), prompt_tokens=100, completion_tokens=20)


def answer(category: str, confidence: float = 0.8) -> str:
    return json.dumps({"category": category, "rationale": f"looks like {category}", "confidence": confidence})


@pytest.fixture
def judge_env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def cli(*args: str):
    result = CliRunner().invoke(app, ["categorize", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def judge_args(server: OpenAIServer, model: str = "openai/judge-m") -> list[str]:
    return ["--judge-model", model, "--judge-api-base", server.url, "--judge-api-key-env", KEY_ENV,
            "--retry-backoff", "0.01", "--no-progress"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- taxonomy --------------------------------------------------------------------------------


def test_shipped_taxonomy_has_the_required_categories_and_rubric():
    required = {"identified_incorrect_file", "missed_edge_case", "misunderstood_problem_statement", "wrong_solution",
                "tool_error", "infinite_loop", "endless_file_reading", "context_overflow_from_listing", "syntax_error", "other"}
    assert required <= set(TAXONOMY.names)
    assert [c.name for c in TAXONOMY.rubric.criteria] == [
        "issue_replication", "solution_confirmation", "logical_clarity", "hallucinations", "consistency", "efficiency"]


@pytest.mark.parametrize("edit, problem", [
    (lambda d: d["categories"].append(dict(d["categories"][0])), "duplicate category 'identified_incorrect_file'"),
    (lambda d: d.update(categories=[c for c in d["categories"] if c["name"] != "other"]), "missing the 'other' category"),
    (lambda d: d["categories"][1].update(description="  "), "category 'missed_edge_case' has an empty description"),
    (lambda d: d["prerules"]["infinite_loop"].update(category="looping"), "pre-rule infinite_loop maps to unknown category 'looping'"),
])
def test_bad_taxonomy_is_one_line_naming_file_and_problem(tmp_path, edit, problem):
    import yaml

    data = yaml.safe_load((ROOT / "failure_categorization" / "taxonomy.yaml").read_text())
    edit(data)
    path = tmp_path / "tax.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as e:
        load_taxonomy(path)
    assert str(e.value).startswith(f"taxonomy {path}: {problem}")


# --- pre-rules -------------------------------------------------------------------------------


def test_prerules_each_rule_and_its_thresholds():
    rules = TAXONOMY.prerules
    hits = {iid: apply_prerules(make_traj(iid, *CASES[iid][:2]), rules) for iid in CASES}
    assert hits["owner__alpha.abc123.pr_1"].category == "context_overflow_from_listing"
    assert hits["owner__alpha.abc123.pr_2"].category == "infinite_loop"
    assert hits["owner__alpha.abc123.pr_3"].category == "tool_error"
    assert all(hits[i] is None for i in JUDGED)

    # Thresholds and switches come from the taxonomy file.
    overflow = make_traj("x", "exit_context", CASES["owner__alpha.abc123.pr_1"][1])
    stricter = rules.model_copy(deep=True)
    stricter.context_overflow_from_listing.min_chars = 10**6
    assert apply_prerules(overflow, stricter) is None
    loop = make_traj("x", "exit_cost", EXPLORE + [("cat a", "")] * 3)
    assert apply_prerules(loop, rules) is None  # 3 < repeats (5)
    fewer = rules.model_copy(deep=True)
    fewer.infinite_loop.repeats = 3
    assert apply_prerules(loop, fewer).rule == "infinite_loop"
    off = rules.model_copy(deep=True)
    off.exit_status.enabled = False
    assert apply_prerules(make_traj("x", "exit_format", EXPLORE), off) is None
    # Autosubmitted forms count by their reason; a huge non-listing output is not a listing overflow.
    assert apply_prerules(make_traj("x", "submitted (exit_format)", EXPLORE), rules).category == "tool_error"
    assert apply_prerules(make_traj("x", "exit_context", EXPLORE + [("python big.py", "y" * 50000)]), rules) is None


def real_syntax_error_output(tmp: Path) -> str:
    """What pytest prints when src/parse.py does not parse (a real run, not a hand-written log)."""
    (tmp / "src").mkdir()
    (tmp / "src" / "parse.py").write_text("def parse(text)\n    return text.split()\n")
    (tmp / "test_parse.py").write_text("import sys\nsys.path.insert(0, 'src')\nfrom parse import parse\n\ndef test_parse():\n    assert parse('a b') == ['a', 'b']\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_parse.py"], cwd=tmp, capture_output=True, text=True)
    assert "SyntaxError" in run.stdout, run.stdout
    return run.stdout


def test_prerule_syntax_error_needs_a_broken_patched_file_left_alone(tmp_path):
    rules = TAXONOMY.prerules
    broken = real_syntax_error_output(tmp_path)
    edit = ("str_replace_editor str_replace /repo/src/parse.py --old_str 'def parse(text):' --new_str 'def parse(text)'", "edited")
    run_tests = ("python -m pytest -q", broken)
    hit = apply_prerules(make_traj("x", "submitted", EXPLORE + [edit, run_tests, ("submit", "")], PATCH), rules)
    assert hit.rule == "syntax_error" and hit.category == "syntax_error"
    assert hit.rationale.startswith("step 5 showed SyntaxError in src/parse.py line 1 (expected ':')")
    # Looked at (or edited) again after the error: no longer evidence enough.
    later = ("str_replace_editor view /repo/src/parse.py", "1 def parse(text):")
    assert apply_prerules(make_traj("x", "submitted", EXPLORE + [edit, run_tests, later], PATCH), rules) is None
    # The broken file is not in the patch, or there is no patch.
    other = PATCH.replace("src/parse.py", "src/lexer.py")
    assert apply_prerules(make_traj("x", "submitted", EXPLORE + [edit, run_tests], other), rules) is None
    assert apply_prerules(make_traj("x", "exit_cost", EXPLORE + [edit, run_tests], ""), rules) is None
    # test_parse.py is a different file from parse.py.
    assert apply_prerules(make_traj("x", "submitted", EXPLORE + [edit, run_tests, ("cat test_parse.py", "")], PATCH), rules).rule == "syntax_error"
    off = rules.model_copy(deep=True)
    off.syntax_error.enabled = False
    assert apply_prerules(make_traj("x", "submitted", EXPLORE + [edit, run_tests], PATCH), off) is None


def test_prerule_endless_file_reading():
    rules = TAXONOMY.prerules
    reads = [("cat src/parse.py", "x"), ("grep -rn token src | head -20", "src/parse.py:1"), ("cd /repo && ls -la src", "parse.py"),
             ("sed -n 1,40p src/lexer.py", "..."), ("find . -name '*.py' 2>/dev/null", "./src/parse.py"),
             ("str_replace_editor view /repo/src/lexer.py", "..."), ("head -5 README.md", "# p"), ("git log --oneline -3", "abc")]
    wander = reads + reads[:4]  # 12 actions, none repeated 5 times in a row
    hit = apply_prerules(make_traj("x", "exit_cost", wander), rules)
    assert hit.rule == "endless_file_reading" and hit.rationale == "12 of 12 actions only read files, no patch, and the run ended on exit_cost"
    assert apply_prerules(make_traj("x", "submitted (exit_context)", wander), rules).rule == "endless_file_reading"
    # Writing (a redirect, sed -i, python) breaks the share; a patch or another ending means it was not only reading.
    writes = [("cat a > b.py", ""), ("sed -i s/a/b/ src/parse.py", ""), ("python repro.py", "")]
    assert apply_prerules(make_traj("x", "exit_cost", wander[:9] + writes), rules) is None  # 9/12 < 0.8
    assert apply_prerules(make_traj("x", "exit_cost", wander[:10] + writes[:2]), rules).rule == "endless_file_reading"  # 10/12
    assert apply_prerules(make_traj("x", "submitted (exit_cost)", wander, PATCH), rules) is None
    assert apply_prerules(make_traj("x", "exit_command_timeout", wander), rules) is None
    assert apply_prerules(make_traj("x", "exit_cost", wander[:9]), rules) is None  # fewer than min_actions (10)


# --- judge input -----------------------------------------------------------------------------


def test_reverse_patch_is_the_fix(tmp_path):
    """SWE-smith's `patch` introduces the bug; applying its reverse with real git restores the code."""
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    original = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
    (repo / "src" / "calc.py").write_text(original)
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True, text=True).stdout
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    (repo / "src" / "calc.py").write_text(original.replace("a + b", "a - b"))
    (repo / "src" / "new.py").write_text("BUG = True\n")
    git("add", "-A")
    bug = git("diff", "--cached")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "bug")
    fix = reverse_patch(bug)
    assert "deleted file mode" in fix
    (tmp_path / "fix.diff").write_text(fix)
    git("apply", str(tmp_path / "fix.diff"))
    assert (repo / "src" / "calc.py").read_text() == original and not (repo / "src" / "new.py").exists()


def test_judge_input_shows_what_the_judge_needs():
    actions = [(f"cmd_{i}", f"out_{i} " + "z" * 3000) for i in range(30)]
    traj = make_traj("owner__alpha.abc123.pr_1", "exit_cost", actions, submission=PATCH)
    bug = PATCH  # the instance's patch introduces the bug; the judge sees its reverse
    inst = Instance(instance_id="owner__alpha.abc123.pr_1", repo="owner/alpha", patch=bug,
                    problem_statement="ISSUE owner__alpha.abc123.pr_1: " + "p" * 10000)
    cfg = InputConfig(last_actions=4, max_observation_chars=200, max_problem_chars=500, max_patch_chars=300, tools=["bash"])
    text = render_case(traj, inst, cfg)
    assert "exit_cost: the run hit its cost or call limit" in text
    assert f"[... {32 + 10000 - 500} more characters clipped ...]" in text  # the problem statement's start only
    assert "### Step 27 of 30" in text and "### Step 26 of 30" not in text and "Action:\ncmd_29" in text
    assert "out_29 " in text and "z" * 300 not in text  # observations clipped
    assert "BEGIN FUNCTION #1: bash" in text and "str_replace_editor" not in text
    assert "-x = 2\n+x = 1" in text  # gold fix = reversed bug patch
    assert "## Model patch" in text and "-x = 1\n+x = 2" in text
    assert "30. [student] cmd_29" in text  # the outline of every action
    # Without an instance, the problem statement comes from the first user message; no gold patch.
    plain = render_case(traj, None, cfg)
    assert "ISSUE owner__alpha.abc123.pr_1: the parser drops the last token." in plain and "Gold patch" not in plain
    system = build_messages(traj, None, TAXONOMY, "unresolved", cfg)[0]["content"]
    assert all(f"- {c.name}: {c.description}" in system for c in TAXONOMY.categories)


def test_repo_names_from_instance_ids():
    assert repo_of("getmoto__moto.694ce1f4.pr_7331", None) == "getmoto/moto"
    assert repo_of("django__django-11099", None) == "django/django"
    assert repo_of("x", Instance(instance_id="x", repo="me/tinycalc")) == "me/tinycalc"


# --- reading answers -------------------------------------------------------------------------


def test_fallback_parser_reads_prose_fences_and_bare_names():
    names = TAXONOMY.names
    fenced = 'Here is my verdict:\n```json\n{"category": "missed_edge_case", "rationale": "None input", "confidence": 80}\n```'
    v = parse_failure(fenced, names)
    assert (v.category, v.confidence, v.status) == ("missed_edge_case", 0.8, "ok")
    prose = 'I think {"category": "Wrong Solution", "rationale": "bad math"} fits best.'
    assert parse_failure(prose, names).category == "wrong_solution"
    assert parse_failure("  `syntax_error`  ", names).category == "syntax_error"
    assert parse_failure("The agent is stuck in an infinite loop; also wrong solution.", names).category == "infinite_loop"
    unknown = parse_failure('{"category": "bad_luck", "rationale": "r"}', names)
    assert (unknown.category, unknown.status, unknown.raw_category) == ("other", "unknown_category", "bad_luck")
    junk = parse_failure("I cannot tell.", names)
    assert (junk.category, junk.status) == ("other", "unparseable")
    assert extract_json("no json here {oops") is None
    scores = parse_rubric('```\n{"scores": {"issue_replication": 5, "efficiency": 9, "consistency": "4"}}\n```', TAXONOMY)
    assert scores.scores["issue_replication"] == 5 and scores.scores["consistency"] == 4
    assert scores.scores["efficiency"] is None and scores.scores["hallucinations"] is None  # out of range / missing


def test_structured_answer_through_response_format(judge_env):
    traj = make_traj("owner__beta.abc123.pr_4", *CASES["owner__beta.abc123.pr_4"])
    messages = build_messages(traj, None, TAXONOMY, "unresolved", InputConfig())
    with OpenAIServer([Reply(content=answer("missed_edge_case", 0.9))]) as server:
        cfg = JudgeConfig(model="openai/judge-m", api_base=server.url, api_key_env=KEY_ENV, response_format="json_schema")
        reply = ask(messages, cfg, failure_schema(TAXONOMY))
    sent = server.requests[0]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["properties"]["category"]["enum"] == TAXONOMY.names
    assert parse_failure(reply.content, TAXONOMY.names).category == "missed_edge_case"
    assert (reply.prompt_tokens, reply.completion_tokens) == (10, 5)


def test_server_rejecting_response_format_is_asked_again_in_plain_text(judge_env):
    with OpenAIServer([Reply(status=400, error_message="response_format json_schema not supported"),
                       Reply(content=answer("tool_error"))]) as server:
        cfg = JudgeConfig(model="openai/judge-m", api_base=server.url, api_key_env=KEY_ENV, response_format="json_schema")
        reply = ask([{"role": "user", "content": "x"}], cfg, failure_schema(TAXONOMY))
    assert "response_format" in server.requests[0] and "response_format" not in server.requests[1]
    assert parse_failure(reply.content, TAXONOMY.names).category == "tool_error"


# --- whole runs through the CLI --------------------------------------------------------------


def test_run_over_real_trajectories_writes_results_summary_csv_and_plot(tmp_path, judge_env):
    trajs, report = write_run(tmp_path)
    answers = {"owner__beta.abc123.pr_4": answer("missed_edge_case"),
               "owner__beta.abc123.pr_5": "```json\n" + answer("wrong_solution") + "\n```",  # fenced: fallback parser
               "owner__beta.abc123.pr_7": answer("flaky_tests")}  # not in the taxonomy -> other, counted
    broken = trajectory_path(trajs, "owner__gamma.abc123.pr_8")
    broken.parent.mkdir(parents=True)
    broken.write_text('{"trajectory": [')  # truncated: recorded as not judged, the run goes on
    json.dump(REPORT | {"ids_unresolved": REPORT["ids_unresolved"] + ["owner__gamma.abc123.pr_8"]}, report.open("w"))
    instances = tmp_path / "instances.jsonl"
    instances.write_text(json.dumps({"instance_id": "owner__beta.abc123.pr_4", "repo": "owner/beta", "patch": PATCH,
                                     "problem_statement": "ISSUE owner__beta.abc123.pr_4: from the instances file"}) + "\n")
    out = tmp_path / "out"
    with OpenAIServer(judge_by_issue(answers)) as server:
        cli(str(trajs), "--report", str(report), "-o", str(out), "--label", "oec", "--instances", str(instances), *judge_args(server))
    assert sorted(issue_id(r) for r in server.requests) == JUDGED  # pre-rule hits and the resolved run: no call
    with_gold = next(r["messages"][1]["content"] for r in server.requests if issue_id(r) == "owner__beta.abc123.pr_4")
    assert "from the instances file" in with_gold and "## Gold patch (the reference fix)" in with_gold and "-x = 2\n+x = 1" in with_gold

    records = {r["instance_id"]: r for r in read_jsonl(out / "oec" / "results.jsonl")}
    assert set(records) == set(CASES) - {"owner__beta.abc123.pr_6"} | {"owner__gamma.abc123.pr_8"}
    assert records.pop("owner__gamma.abc123.pr_8")["not_judged_reason"].startswith("unreadable trajectory:")
    assert {i: (r["category"], r["source"]) for i, r in records.items()} == {
        "owner__alpha.abc123.pr_1": ("context_overflow_from_listing", "prerule"),
        "owner__alpha.abc123.pr_2": ("infinite_loop", "prerule"),
        "owner__alpha.abc123.pr_3": ("tool_error", "prerule"),
        "owner__beta.abc123.pr_4": ("missed_edge_case", "judge"),
        "owner__beta.abc123.pr_5": ("wrong_solution", "judge"),
        "owner__beta.abc123.pr_7": ("other", "judge"),
    }
    r4 = records["owner__beta.abc123.pr_4"]
    assert (r4["repo"], r4["exit_status"], r4["evaluation"], r4["tokens"], r4["confidence"]) == ("owner/beta", "submitted", "unresolved", 120, 0.8)
    assert r4["trajectory"].endswith("owner__beta.abc123.pr_4.traj") and r4["rationale"] == "looks like missed_edge_case"
    assert records["owner__beta.abc123.pr_7"]["raw_category"] == "flaky_tests"
    assert records["owner__beta.abc123.pr_7"]["evaluation"] == "error"

    summary = json.loads((out / "oec" / "summary.json").read_text())
    assert summary["total"] == 7 and summary["by_source"] == {"prerule": 3, "judge": 3, "not_judged": 1}
    assert summary["by_category"]["other"] == 1 and summary["by_category"]["missed_edge_case"] == 1
    assert summary["by_repo"] == {"owner/alpha": 3, "owner/beta": 3, "owner/gamma": 1}
    assert summary["unknown_categories"] == 1 and summary["missing_trajectories"] == ["owner__gamma.abc123.pr_9"]
    assert summary["cost"] == 0 and summary["cost_note"]  # the loopback model has no price: counted as 0, said so
    rows = list(csv.DictReader((out / "oec" / "results.csv").open()))
    assert len(rows) == 7 and rows[0]["instance_id"] == "owner__alpha.abc123.pr_1"
    table = list(csv.reader((out / "categories.csv").open()))
    assert table[0] == ["category", "oec"] and ["missed_edge_case", "1"] in table
    assert (out / "categories.png").stat().st_size > 10_000
    for path in out.rglob("*"):  # the judge's key never reaches an output file
        assert not path.is_file() or SECRET not in path.read_text(errors="ignore")


def test_resume_asks_nothing_the_second_time_and_only_changed_trajectories_later(tmp_path, judge_env):
    trajs, report = write_run(tmp_path)
    out = tmp_path / "out"
    with OpenAIServer(judge_by_issue({})) as server:
        args = [str(trajs), "--report", str(report), "-o", str(out), "--workers", "3", *judge_args(server)]
        cli(*args)
        assert len(server.requests) == 3
        first = (out / "trajs" / "results.jsonl").read_text()
        cli(*args)
        assert len(server.requests) == 3  # everything came from the cache
        second = read_jsonl(out / "trajs" / "results.jsonl")
        assert [r["cached"] for r in second if r["source"] == "judge"] == [True] * 3
        assert [r["category"] for r in second] == [r["category"] for r in map(json.loads, first.splitlines())]
        # A changed trajectory is judged again; a different judge config asks everything again.
        changed = make_traj("owner__beta.abc123.pr_5", "submitted (exit_cost)", EXPLORE + [("ls -la", "x")], PATCH)
        save_trajectory(trajectory_path(trajs, "owner__beta.abc123.pr_5"), changed)
        cli(*args)
        assert [issue_id(r) for r in server.requests[3:]] == ["owner__beta.abc123.pr_5"]
        cli(*args, "--last-actions", "3")
        assert len(server.requests) == 7


def test_rate_limits_are_retried_auth_errors_are_not(tmp_path, judge_env):
    cases = {"owner__beta.abc123.pr_4": CASES["owner__beta.abc123.pr_4"]}
    trajs, report = write_run(tmp_path, cases, {"ids_unresolved": list(cases)})
    with OpenAIServer([Reply(status=429), Reply(status=503), Reply(content=answer("wrong_solution"))]) as server:
        cli(str(trajs), "--report", str(report), "-o", str(tmp_path / "out"), *judge_args(server))
    assert len(server.requests) == 3
    assert read_jsonl(tmp_path / "out" / "trajs" / "results.jsonl")[0]["category"] == "wrong_solution"

    with OpenAIServer([Reply(status=429)]) as server:  # never recovers: recorded, not fatal
        cli(str(trajs), "--report", str(report), "-o", str(tmp_path / "out2"), "--retries", "2", *judge_args(server))
    assert len(server.requests) == 3
    record = read_jsonl(tmp_path / "out2" / "trajs" / "results.jsonl")[0]
    assert record["source"] == "not_judged" and record["not_judged_reason"].startswith("judge failed: RateLimitError after 3 attempts")

    with OpenAIServer([Reply(status=401, error_message="invalid api key")]) as server:
        result = CliRunner().invoke(app, ["categorize", str(trajs), "--report", str(report), "-o", str(tmp_path / "out3"), *judge_args(server)])
    assert len(server.requests) == 1 and isinstance(result.exception, UserError)
    assert "AuthenticationError" in str(result.exception)
    assert not (tmp_path / "out3" / "trajs").exists() and not (tmp_path / "out3" / "summary.json").exists()


def test_cost_limit_stops_asking_and_records_the_rest(tmp_path, judge_env):
    trajs, report = write_run(tmp_path)
    out = tmp_path / "out"
    with OpenAIServer(judge_by_issue({})) as server:  # gpt-4o-mini has a litellm price, so calls cost > 0
        cli(str(trajs), "--report", str(report), "-o", str(out), "--workers", "1", "--cost-limit", "0.000001",
            *judge_args(server, model="openai/gpt-4o-mini"))
    assert len(server.requests) == 1
    summary = json.loads((out / "trajs" / "summary.json").read_text())
    assert summary["by_source"] == {"prerule": 3, "judge": 1, "not_judged": 2}
    assert summary["not_judged_reasons"] == {"cost limit $1e-06 reached": 2}
    assert 0 < summary["cost"] == summary["cost_this_run"] and summary["cost_note"] is None


def test_prerules_only_asks_no_judge_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    trajs, report = write_run(tmp_path)
    result = cli(str(trajs), "--report", str(report), "-o", str(tmp_path / "out"), "--prerules-only", "--no-progress")
    assert "3 by pre-rule, 0 by the judge, 3 not judged" in result.output
    records = read_jsonl(tmp_path / "out" / "trajs" / "results.jsonl")
    assert {r["not_judged_reason"] for r in records if r["source"] == "not_judged"} == {"pre-rules only: no judge was asked"}


def test_submitted_runs_are_scored_on_the_rubric(tmp_path, judge_env):
    trajs, report = write_run(tmp_path)
    scores = {c.name: 4 for c in TAXONOMY.rubric.criteria} | {"efficiency": 2}
    reply = json.dumps({"scores": scores, "rationale": "reproduced, then fixed", "confidence": 0.7})
    with OpenAIServer([Reply(content=reply)]) as server:
        cli(str(trajs), "--report", str(report), "-o", str(tmp_path / "out"), "--submitted", *judge_args(server))
    assert len(server.requests) == 3  # pr_4, pr_5 (autosubmitted), pr_6 (resolved): all submitted a patch
    assert "issue_replication" in server.requests[0]["messages"][0]["content"]
    summary = json.loads((tmp_path / "out" / "trajs" / "summary.json").read_text())
    assert summary["rubric"]["criteria"]["efficiency"] == {"n": 3, "mean": 2.0, "distribution": {"2": 3}}
    assert summary["rubric"]["mean_by_evaluation"]["resolved"]["issue_replication"] == 4.0
    assert set(summary["rubric"]["mean_by_evaluation"]) == {"resolved", "unresolved"}
    assert (tmp_path / "out" / "rubric.png").is_file() and (tmp_path / "out" / "rubric.csv").is_file()


def test_several_runs_side_by_side_and_compare_mode(tmp_path, judge_env):
    base_trajs, base_report = write_run(tmp_path / "base")
    oec_cases = {i: c for i, c in CASES.items() if i != "owner__alpha.abc123.pr_2"}
    oec_trajs, oec_report = write_run(tmp_path / "oec", oec_cases,
                                      REPORT | {"ids_unresolved": [i for i in REPORT["ids_unresolved"] if i != "owner__alpha.abc123.pr_2"]})
    out = tmp_path / "out"
    with OpenAIServer(judge_by_issue({"owner__beta.abc123.pr_4": answer("identified_incorrect_file")})) as server:
        cli("--run", f"base={base_trajs}:{base_report}", "--run", f"oec={oec_trajs}:{oec_report}", "-o", str(out), *judge_args(server))
    assert len(server.requests) == 3  # the second run's identical trajectories come from the shared cache
    combined = json.loads((out / "summary.json").read_text())
    assert list(combined["runs"]) == ["base", "oec"] and combined["runs"]["oec"]["by_category"]["infinite_loop"] == 0
    assert list(csv.reader((out / "categories.csv").open()))[0] == ["category", "base", "oec"]

    cmp_out = tmp_path / "cmp"
    cli("--compare", f"before={out / 'base'}", "--compare", f"after={out / 'oec'}", "-o", str(cmp_out))
    assert list(json.loads((cmp_out / "summary.json").read_text())["runs"]) == ["before", "after"]
    assert (cmp_out / "categories.png").stat().st_size > 10_000


# --- bad input: one line, exit 2, nothing written ------------------------------------------


def run_cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")} | (env or {})
    return subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "categorize", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_bad_inputs_are_one_clear_line_and_nothing_is_written(tmp_path):
    trajs, report = write_run(tmp_path)
    bad_tax = tmp_path / "tax.yaml"
    bad_tax.write_text((ROOT / "failure_categorization" / "taxonomy.yaml").read_text().replace(
        "  - name: missed_edge_case", "  - name: identified_incorrect_file"))
    checks = [
        (["--taxonomy", str(bad_tax), "--prerules-only"], f"taxonomy {bad_tax}: duplicate category 'identified_incorrect_file'"),
        (["--report", str(tmp_path / "nope.json"), "--prerules-only"], f"evaluation report {tmp_path / 'nope.json'} not found"),
        (["--judge-model", "openai/gpt-4o-mini"], "judge model openai/gpt-4o-mini needs OPENAI_API_KEY"),
    ]
    for extra, message in checks:
        out = tmp_path / "out"
        args = [str(trajs), "-o", str(out), *(["--report", str(report)] if "--report" not in extra else []), *extra]
        proc = run_cli(args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
        assert not out.exists()


def test_real_swe_agent_trajectory_renders_for_the_judge():
    """A trajectory SWE-agent itself wrote (fixture) condenses into a judge case."""
    from sweagent_oec.data.trajectory import load_trajectory

    traj = load_trajectory(ROOT / "tests" / "data" / "fixtures" / "swe_agent_traj" / "marshmallow-1867.function_calling.traj")
    text = render_case(traj, None, InputConfig(last_actions=3))
    assert "TimeDelta serialization precision" in text  # from the first user message
    assert "submitted: the agent called submit itself" in text
    assert f"### Step {len(traj.trajectory)} of {len(traj.trajectory)}" in text and "1. create reproduce.py" in text
    assert "## Model patch" in text and "diff --git" in text


def test_timeouts_and_dropped_connections_are_retried(judge_env):
    script = [Reply(drop=True), Reply(content="late", delay=3.0), Reply(content=answer("syntax_error"))]
    with OpenAIServer(script) as server:
        cfg = JudgeConfig(model="openai/judge-m", api_base=server.url, api_key_env=KEY_ENV, timeout=1.0, backoff=0.01)
        reply = ask([{"role": "user", "content": "x"}], cfg, failure_schema(TAXONOMY))
    assert len(server.requests) == 3 and parse_failure(reply.content, TAXONOMY.names).category == "syntax_error"


def test_a_judge_that_trickles_its_answer_is_cut_at_the_timeout(judge_env):
    """`timeout` bounds the whole judge call (the run loop's models' call path), not each read."""
    import time

    from failure_categorization.judge import JudgeCallError

    with OpenAIServer([Reply(content=answer("syntax_error"), trickle=0.5)]) as server:
        cfg = JudgeConfig(model="openai/judge-m", api_base=server.url, api_key_env=KEY_ENV, timeout=2.0, retries=1, backoff=0.01)
        started = time.monotonic()
        with pytest.raises(JudgeCallError, match="after 2 attempts"):
            ask([{"role": "user", "content": "x"}], cfg, failure_schema(TAXONOMY))
        assert time.monotonic() - started < 8  # two 2 s attempts; a per-read timeout would let it trickle for minutes
    assert len(server.requests) == 2
