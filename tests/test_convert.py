"""The convert stage end to end: filters, masking, mixing, outputs, stats, and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from sweagent_oec.data.convert import Options, Source, convert
from sweagent_oec.data.filters import RepetitionRules
from sweagent_oec.errors import UserError
from tests.test_sft import STUDENT_CONFIG, golden_traj, write_traj

FIXTURES = Path(__file__).parent / "data" / "fixtures"


def make_traj(commands: list[str], switch_step: int | None, exit_status: str = "submitted", task: str = "Fix the bug.") -> dict:
    """A run-loop-shaped trajectory of bash actions (native tool calls). switch_step None: a
    plain single-model run (no roles), i.e. behavioural-cloning data."""
    def role(j):
        return None if switch_step is None else ("student" if j < switch_step else "expert")

    history = [{"role": "system", "content": "sys", "message_type": "system_prompt"},
               {"role": "user", "content": task, "message_type": "observation"}]
    steps = []
    for j, command in enumerate(commands):
        query = [dict(m) for m in history]
        call = {"id": f"c{j}", "type": "function", "function": {"name": "bash", "arguments": json.dumps({"command": command})}}
        assistant = {"role": "assistant", "content": f"step {j}", "tool_calls": [call], "message_type": "action"}
        if role(j):
            assistant.update(model_role=role(j), model_name=f"{role(j)}-model")
        history += [assistant, {"role": "tool", "content": f"OBSERVATION:\nout {j}", "tool_call_ids": [f"c{j}"],
                                "message_type": "observation"}]
        steps.append({"action": command, "observation": f"out {j}", "response": f"step {j}", "thought": f"step {j}",
                      "query": query, "extra_info": {"tool_call": {"name": "bash", "arguments": {"command": command}}},
                      "model_role": role(j), "model_name": role(j) and f"{role(j)}-model"})
    info = {"submission": "diff", "exit_status": exit_status}
    if switch_step is not None:
        info["oec"] = {"switch_step": switch_step, "switched": True, "student_model": "student-model", "expert_model": "expert-model"}
    return {"trajectory": steps, "history": history, "info": info}


def report(path: Path, resolved=(), unresolved=(), error=()) -> Path:
    path.write_text(json.dumps({"ids_resolved": list(resolved), "ids_unresolved": list(unresolved), "ids_error": list(error)}))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


WORK = ["ls", "cat a.py", "python repro.py", "sed -i s/a/b/ a.py", "python repro.py"]


@pytest.fixture
def batch(tmp_path):
    """One of each case a real batch has."""
    trajs = tmp_path / "trajs"
    write_traj(trajs, "good", make_traj(WORK, 2, task="good"))
    write_traj(trajs, "gold", golden_traj())
    write_traj(trajs, "looping", make_traj(WORK + ["pytest"] * 4, 2))
    write_traj(trajs, "student_loop", make_traj(["pytest"] * 4 + WORK, 4))  # loop only in masked turns
    write_traj(trajs, "never_switched", make_traj(WORK, 99))
    write_traj(trajs, "failed", make_traj(WORK, 2, task="failed"))
    write_traj(trajs, "errored", make_traj(WORK, 2, task="errored"))
    write_traj(trajs, "unknown", make_traj(WORK, 2, task="unknown"))  # not in the report
    (trajs / "corrupt").mkdir()
    (trajs / "corrupt" / "corrupt.traj").write_text('{"trajectory": [{"action": "ls"')
    rep = report(tmp_path / "report.json", resolved=["good", "gold", "looping", "student_loop", "never_switched", "corrupt"],
                 unresolved=["failed"], error=["errored"])
    return trajs, rep


def test_batch_conversion(tmp_path, batch):
    trajs, rep = batch
    out = tmp_path / "out"
    stats = convert(Options([Source("main", [trajs], rep)], out))
    counts = stats["counts"]
    assert (counts["files"], counts["unresolved"], counts["error"], counts["missing_from_report"], counts["bad_file"],
            counts["loop"], counts["no_trainable_turn"], counts["train"]) == (9, 1, 1, 1, 1, 1, 1, 3)
    assert stats["loops_by_rule"] == {"consecutive": 1}
    records = read_jsonl(out / "train.jsonl")
    assert sorted(r["instance_id"] for r in records) == ["gold", "good", "student_loop"]
    good = next(r for r in records if r["instance_id"] == "good")
    assert [m["train"] for m in good["messages"] if m["role"] == "assistant"] == [False, False, True, True, True, True]
    assert good["source"] == "oec" and good["switch_step"] == 2 and good["resolved"] is True and good["model"] == "expert-model"
    dropped = {d["instance_id"]: d for d in read_jsonl(out / "dropped.jsonl")}
    assert {k: d["reason"] for k, d in dropped.items()} == {
        "corrupt": "bad_file", "errored": "error", "failed": "unresolved", "looping": "loop",
        "never_switched": "no_trainable_turn", "unknown": "missing_from_report"}
    assert dropped["looping"]["loops"] == [{"rule": "consecutive", "start": 6, "action": "pytest"}]
    assert "corrupt.traj: not valid JSON" in dropped["corrupt"]["error"]
    # Turn counts and the switch-step histogram cover the kept records.
    assert stats["turns"]["trained"] == 4 + 3 + 6 and stats["turns"]["masked_assistant"] == 2 + 2 + 4
    assert stats["switch_step_histogram"] == {"2": 2, "4": 1}
    # The datasets folder holds the same records.
    loaded = datasets.load_from_disk(str(out / "dataset"))
    assert list(loaded) == ["train"]
    assert sorted(loaded["train"]["instance_id"]) == ["gold", "good", "student_loop"]
    assert json.loads((out / "stats.json").read_text()) == stats


def test_truncate_loops_cuts_where_the_loop_starts(tmp_path, batch):
    trajs, rep = batch
    convert(Options([Source("main", [trajs], rep)], tmp_path / "out"))
    stats = convert(Options([Source("main", [trajs], rep)], tmp_path / "out", truncate_loops=True))  # rerun replaces outputs
    assert stats["counts"]["truncated"] == 1 and stats["counts"]["loop"] == 0
    assert len(datasets.load_from_disk(str(tmp_path / "out" / "dataset"))["train"]) == 4
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []
    looping = next(r for r in read_jsonl(tmp_path / "out" / "train.jsonl") if r["instance_id"] == "looping")
    commands = [json.loads(m["tool_calls"][0]["function"]["arguments"])["command"] for m in looping["messages"] if m["role"] == "assistant"]
    assert commands == WORK + ["pytest"]  # the first run stays; the repeats and the submit go
    assert looping["messages"][-1]["role"] == "assistant"


def test_keep_unresolved_and_thresholds(tmp_path, batch):
    trajs, rep = batch
    stats = convert(Options([Source("main", [trajs], rep)], tmp_path / "out", resolved_only=False,
                            rules=RepetitionRules(max_consecutive=0)))
    assert stats["counts"]["loop"] == 0
    records = {r["instance_id"]: r for r in read_jsonl(tmp_path / "out" / "train.jsonl")}
    assert records["failed"]["resolved"] is False and records["errored"]["resolved"] is False
    assert records["unknown"]["resolved"] is None
    assert records["looping"]["resolved"] is True


def test_student_rewrite_in_the_stage(tmp_path, batch):
    trajs, rep = batch
    convert(Options([Source("main", [trajs / "gold"], rep)], tmp_path / "out", student_config=STUDENT_CONFIG))
    (record,) = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert "---- BEGIN FUNCTION #1: bash ----" in record["messages"][0]["content"]
    assert all("tool_calls" not in m for m in record["messages"])
    assert record["messages"][-1]["content"] == "<function=submit>\n</function>"


def test_mixing_sources(tmp_path):
    oec, bc = tmp_path / "oec", tmp_path / "bc"
    ids = [f"inst{i}" for i in range(6)]
    for i, instance_id in enumerate(ids):
        write_traj(oec, instance_id, make_traj(WORK + [f"echo {i}"], 2))
        write_traj(bc, instance_id, make_traj(WORK + [f"echo bc {i}"], None))
    write_traj(bc, "copy", make_traj(WORK + ["echo 0"], 2))  # identical to oec/inst0: deduplicated
    rep = report(tmp_path / "report.json", resolved=ids + ["copy"])
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("# held out\ninst5\n")

    def run(out, **kwargs):
        sources = [Source("oec", [oec], rep, kwargs.pop("oec_weight", 1.0)), Source("bc", [bc], rep, kwargs.pop("bc_weight", 1.0))]
        return convert(Options(sources, tmp_path / out, heldout=heldout, **kwargs))

    stats = run("a", bc_weight=2.0)
    assert stats["counts"]["duplicates"] == 1
    assert stats["counts"]["heldout"] == 3 and stats["counts"]["train"] == 5 + 10
    assert stats["records_by_kind"] == {"oec": 6, "bc": 12}
    heldout_records = read_jsonl(tmp_path / "a" / "heldout.jsonl")
    assert {r["instance_id"] for r in heldout_records} == {"inst5"}
    assert sorted(datasets.load_from_disk(str(tmp_path / "a" / "dataset"))) == ["heldout", "train"]

    stats = run("b", max_per_instance=1, oec_weight=0.0)
    assert stats["counts"]["train"] == 5 and stats["counts"]["weighted_out"] == 6
    assert {r["source"] for r in read_jsonl(tmp_path / "b" / "train.jsonl")} == {"bc"}

    # Same seed, same dataset; another seed, another order.
    run("c", seed=7), run("d", seed=7), run("e", seed=8)
    same = [(tmp_path / x / "train.jsonl").read_text() for x in "cde"]
    assert same[0] == same[1] != same[2]


def test_token_counts_with_a_local_tokenizer(tmp_path, batch):
    import re

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    trajs, rep = batch
    stats = convert(Options([Source("main", [trajs / "good"], rep)], tmp_path / "out", tokenizer=str(tmp_path / "tok")))
    (record,) = read_jsonl(tmp_path / "out" / "train.jsonl")

    def words(m):
        text = m["content"] + "".join(c["function"]["name"] + c["function"]["arguments"] for c in m.get("tool_calls") or [])
        return len(re.findall(r"\w+|[^\w\s]+", text))

    assert stats["tokens"] == {"trained": sum(words(m) for m in record["messages"] if m["train"]),
                               "masked": sum(words(m) for m in record["messages"] if not m["train"])}
    assert stats["tokens"]["trained"] > 0 and stats["tokens"]["masked"] > 0


def test_external_trajectories_with_sidecar_switch_step(tmp_path):
    src = FIXTURES / "swe_agent_traj" / "marshmallow-1867.xml.traj"
    folder = tmp_path / "ext"
    folder.mkdir()
    (folder / "m.traj").write_text(src.read_text())
    (folder / "m.traj.oec.json").write_text(json.dumps({"switch_step": 3}))
    (folder / "bc.traj").write_text(src.read_text())
    stats = convert(Options([Source("ext", [folder], None)], tmp_path / "out", resolved_only=False))
    records = {r["instance_id"]: r for r in read_jsonl(tmp_path / "out" / "train.jsonl")}
    assert records["m"]["source"] == "oec" and records["m"]["switch_step"] == 3
    assert records["bc"]["source"] == "bc" and records["bc"]["resolved"] is None
    assert stats["switch_step_histogram"] == {"3": 1, "bc": 1}


# ---------------------------------------------------------------- bad input: one clear line


def test_resolved_only_needs_a_report(tmp_path, batch):
    with pytest.raises(UserError, match="no evaluation report"):
        convert(Options([Source("main", [batch[0]], None)], tmp_path / "out"))


def test_nothing_left_is_an_error_that_points_at_the_drop_list(tmp_path, batch):
    trajs, _ = batch
    rep = report(tmp_path / "empty.json", unresolved=["good"])
    with pytest.raises(UserError, match="failed_run/dropped.jsonl"):
        convert(Options([Source("main", [trajs], rep)], tmp_path / "out"))
    # The failed run's diagnostics go aside; no (empty) train.jsonl is written.
    assert len(read_jsonl(tmp_path / "out" / "failed_run" / "dropped.jsonl")) == 9
    assert json.loads((tmp_path / "out" / "failed_run" / "stats.json").read_text())["counts"]["train"] == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["failed_run"]


def cli(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "convert", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_cli_batch_skips_bad_files_and_errors_in_one_line(tmp_path, batch):
    trajs, rep = batch
    result = cli(trajs, "--report", rep, "-o", tmp_path / "out", "--style", "xml")
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stderr and "corrupt.traj: not valid JSON" in result.stderr
    assert "missing_from_report 1" in result.stderr
    assert len(read_jsonl(tmp_path / "out" / "train.jsonl")) == 3

    bad_cases = [
        (["--style", "yaml"], "Invalid value for '--style'"),  # the parser knows the styles
        (["--report", tmp_path / "nope.json"], "does not exist"),
        (["--student-config", tmp_path / "nope.yaml"], "nope.yaml does not exist"),
    ]
    for extra, message in bad_cases:
        args = [trajs, "-o", tmp_path / "bad"] + (["--report", rep] if "--report" not in extra else []) + extra
        result = cli(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, (extra, result.stderr)
        assert len(lines) == 1 and message in lines[0], (extra, result.stderr)


def test_convert_to_sft_script(tmp_path):
    oec, bc = tmp_path / "oec", tmp_path / "bc"
    write_traj(oec, "a", make_traj(WORK, 2, task="a"))
    write_traj(bc, "a", make_traj(WORK, None, task="a"))
    rep = report(tmp_path / "report.json", resolved=["a"])
    instances = tmp_path / "instances.jsonl"
    instances.write_text(json.dumps({"instance_id": "a", "repo": "o/r", "problem_statement": "PROBLEM-A the mean is off"}) + "\n")
    script = Path(__file__).parent.parent / "scripts" / "convert_to_sft.sh"
    env = {**os.environ, "OEC_DIR": str(oec), "OEC_REPORT": str(rep), "BC_DIR": str(bc), "BC_REPORT": str(rep),
           "STUDENT_CONFIG": str(STUDENT_CONFIG), "OUT": str(tmp_path / "out"), "BC_WEIGHT": "2", "INSTANCES": str(instances),
           "OEC": f"{sys.executable} -m sweagent_oec.cli"}
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["records_by_kind"] == {"oec": 1, "bc": 2}
    assert stats["options"]["style"] == "xml_function_calling" and stats["options"]["student_config"] == str(STUDENT_CONFIG)
    records = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert all("<function=" in m["content"] for r in records for m in r["messages"] if m["role"] == "assistant")
    # The task message comes from the student's template and the instance, not the trajectory's "a".
    assert all("<pr_description>\nPROBLEM-A the mean is off" in r["messages"][1]["content"] for r in records)
    assert stats["options"]["instances"] == str(instances) and stats["counts"]["task_message_kept"] == 0


def test_a_real_oec_run_of_the_agent_loop_converts(tmp_path):
    """The run loop (replay models, local runtime, bundled task) writes an OEC trajectory that
    converts to the expected masks: 2 student turns masked, the expert's 2 turns and the
    restored submit trained."""
    from sweagent_oec.config import load_config
    from sweagent_oec.runner import run_instance
    from sweagent_oec.tasks.bundled import materialize_tinycalc

    solution = (Path(__file__).parent.parent / "sweagent_oec" / "tasks" / "bundled" / "tinycalc.replay.jsonl").read_text().splitlines()
    (tmp_path / "student.jsonl").write_text("\n".join(solution[:2]) + "\n")
    (tmp_path / "expert.jsonl").write_text("\n".join(solution[2:]) + "\n")
    config = (Path(__file__).parent / "data" / "sft" / "replay_switching.yaml").read_text()
    config = config.replace("STUDENT_REPLAY", str(tmp_path / "student.jsonl")).replace("EXPERT_REPLAY", str(tmp_path / "expert.jsonl"))
    (tmp_path / "cfg.yaml").write_text(config)
    instance = materialize_tinycalc(tmp_path / "task")
    path, info = run_instance(load_config([tmp_path / "cfg.yaml"]), instance, tmp_path / "trajs")
    assert info["exit_status"] == "submitted"
    rep = report(tmp_path / "report.json", resolved=[instance.instance_id])
    convert(Options([Source("main", [tmp_path / "trajs"], rep)], tmp_path / "out", student_config=STUDENT_CONFIG))
    (record,) = read_jsonl(tmp_path / "out" / "train.jsonl")
    assistants = [(m["content"], m["train"]) for m in record["messages"] if m["role"] == "assistant"]
    assert [train for _, train in assistants] == [False, False, True, True, True]
    assert assistants[0][0].startswith("Let me find the mean function.\n\n<function=bash>")
    # The submit turn is recorded by the loop with the model's own thought.
    assert assistants[-1][0] == "All tests pass; submitting.\n\n<function=submit>\n</function>"
    assert record["switch_step"] == 2 and record["source"] == "oec"

    # The history after the switch holds the expert's task message; with --instances the record
    # gets exactly the one the student was sent at step 0 (its query, as the run loop rendered it).
    (task_message,) = [m["content"] for m in record["messages"] if m["role"] == "user"][:1]
    assert task_message.startswith("EXPERT TASK in ")
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps([instance.model_dump(mode="json")]))
    stats = convert(Options([Source("main", [tmp_path / "trajs"], rep)], tmp_path / "out2", student_config=STUDENT_CONFIG,
                            instances=instances))
    (rerendered,) = read_jsonl(tmp_path / "out2" / "train.jsonl")
    sent = json.loads(path.read_text())["trajectory"][0]["query"]
    assert [m for m in rerendered["messages"] if m["role"] == "user"][0]["content"] == [m for m in sent if m["role"] == "user"][0]["content"]
    assert instance.problem_statement in sent[1]["content"] and stats["counts"]["task_message_kept"] == 0
    assert rerendered["messages"][1:] != record["messages"][1:] and rerendered["messages"][2:] == record["messages"][2:]

    # An id the instances lack keeps its message (and is counted); --instances needs a student config.
    instances.write_text("[]")
    stats = convert(Options([Source("main", [tmp_path / "trajs"], rep)], tmp_path / "out3", student_config=STUDENT_CONFIG, instances=instances))
    assert stats["counts"]["task_message_kept"] == 1
    with pytest.raises(UserError, match=r"^--instances re-renders the task message with the student's template; pass --student-config too$"):
        convert(Options([Source("main", [tmp_path / "trajs"], rep)], tmp_path / "out4", instances=instances))
