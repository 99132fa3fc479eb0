"""SWE-bench instances (no engine): recognition, gold patch, image names, splits, skip rules,
SWE-bench's own test spec and grading on the rows in tests/data/swebench_verified.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sweagent_oec.errors import UserError
from sweagent_oec.tasks.instances import (
    Instance, default_split, instance_language, load_instances, skip_instances, swebench_image_name, write_instances_jsonl)

DATA = Path(__file__).parent / "data"
VERIFIED = DATA / "swebench_verified.jsonl"
SWESMITH = next((DATA / "fixtures" / "swesmith").glob("instance.*.json"))


@pytest.fixture
def offline_swebench(monkeypatch):
    """SWE-bench's make_test_spec with its environment-image downloads (requirements.txt and
    environment.yml from GitHub) answered with nothing: grading never runs that script, and tests
    never reach the network."""
    python = pytest.importorskip("swebench.harness.test_spec.python")
    monkeypatch.setattr(python, "get_requirements", lambda instance: "")
    monkeypatch.setattr(python, "get_environment_yml", lambda instance, env_name: "")


def raw_rows() -> list[dict]:
    return [json.loads(line) for line in VERIFIED.read_text().splitlines()]


# ---------------------------------------------------------------- recognition and the gold patch


def test_verified_rows_are_swebench_and_nothing_is_injected():
    django, flask = load_instances(VERIFIED)
    raw = raw_rows()
    for instance, row in zip((django, flask), raw):
        assert instance.is_swebench
        assert instance.patch == ""  # no runtime reads SWE-bench's fix as a bug to inject
        assert instance.gold_patch == row["patch"] and instance.test_patch == row["test_patch"]
        assert instance.FAIL_TO_PASS == json.loads(row["FAIL_TO_PASS"])  # JSON strings parsed
        assert instance.PASS_TO_PASS == json.loads(row["PASS_TO_PASS"])
        assert instance.version == row["version"] and instance.environment_setup_commit == row["environment_setup_commit"]
        assert instance.base_commit == row["base_commit"] and instance.created_at == row["created_at"]
    # Django's ids are unittest's, with spaces: kept as they are.
    assert django.FAIL_TO_PASS[0] == "test_ascii_validator (auth_tests.test_validators.UsernameValidatorsTests)"


def test_swesmith_rows_are_not_swebench():
    [instance] = load_instances(SWESMITH)
    assert not instance.is_swebench and instance.patch  # SWE-smith's patch is the bug
    assert "gold_patch" not in instance.model_dump()


def test_written_back_and_read_again_keeps_the_meaning(tmp_path):
    loaded = load_instances(VERIFIED)
    write_instances_jsonl(tmp_path / "again.jsonl", loaded)
    again = load_instances(tmp_path / "again.jsonl")
    assert [i.model_dump() for i in again] == [i.model_dump() for i in loaded]
    assert all(i.patch == "" and i.gold_patch for i in again)


def test_a_row_with_two_different_fixes_is_refused(tmp_path):
    row = {**raw_rows()[1], "gold_patch": raw_rows()[0]["patch"]}
    (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match=r"rows.jsonl:1: instance 'pallets__flask-5014'.*both `gold_patch` and a different `patch`"):
        load_instances(tmp_path / "rows.jsonl")
    same = Instance.model_validate({**raw_rows()[1], "gold_patch": raw_rows()[1]["patch"]})
    assert same.patch == "" and same.gold_patch == raw_rows()[1]["patch"]


def test_numeric_version_still_marks_a_swebench_row():
    row = {**raw_rows()[1], "version": 2.3}
    instance = Instance.model_validate(row)
    assert instance.is_swebench and instance.patch == "" and instance.gold_patch == row["patch"]


# ---------------------------------------------------------------- images


def test_image_names_follow_swebench(monkeypatch):
    monkeypatch.delenv("OEC_SWEBENCH_NAMESPACE", raising=False)
    monkeypatch.delenv("OEC_SWEBENCH_TAG", raising=False)
    django, flask = load_instances(VERIFIED)
    assert django.image_name == "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    assert flask.image_name == "swebench/sweb.eval.x86_64.pallets_1776_flask-5014:latest"
    assert swebench_image_name("Org__Repo-1", namespace="", tag="v2") == "sweb.eval.x86_64.org__repo-1:v2"
    monkeypatch.setenv("OEC_SWEBENCH_NAMESPACE", "mirror.local/sb")
    monkeypatch.setenv("OEC_SWEBENCH_TAG", "v1")
    assert load_instances(VERIFIED)[0].image_name == "mirror.local/sb/sweb.eval.x86_64.django_1776_django-11099:v1"
    # A row that names its image keeps it.
    assert Instance.model_validate({**raw_rows()[0], "image_name": "mine:1"}).image_name == "mine:1"


def test_image_names_match_swebench_test_spec(offline_swebench):
    test_spec = pytest.importorskip("swebench.harness.test_spec.test_spec")
    for row in raw_rows():
        spec = test_spec.make_test_spec(row, namespace="swebench")
        assert swebench_image_name(row["instance_id"], "swebench", "latest") == spec.instance_image_key
        local = test_spec.make_test_spec(row, namespace=None, instance_image_tag="v3")
        assert swebench_image_name(row["instance_id"], "", "v3") == local.instance_image_key


# ---------------------------------------------------------------- splits


def test_splits_of_a_datasets_folder(tmp_path):
    import datasets

    rows = raw_rows()
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "only_test"))
    assert [i.instance_id for i in load_instances(tmp_path / "only_test")] == [r["instance_id"] for r in rows]
    datasets.DatasetDict({"dev": datasets.Dataset.from_list(rows[:1]), "test": datasets.Dataset.from_list(rows)}
                         ).save_to_disk(str(tmp_path / "two"))
    assert len(load_instances(tmp_path / "two", split="dev")) == 1
    assert len(load_instances(tmp_path / "two", split="test")) == 2
    with pytest.raises(UserError, match=r"no split 'train' \(splits: dev, test\); pass one of them with --split"):
        load_instances(tmp_path / "two")
    loaded = load_instances(tmp_path / "two", split="test")
    assert all(i.is_swebench and i.patch == "" for i in loaded)


def test_split_defaults_and_files_have_none(tmp_path):
    assert default_split("princeton-nlp/SWE-bench_Verified") == "test"
    assert default_split("SWE-bench/SWE-bench_Lite") == "test"
    assert default_split("SWE-bench/SWE-bench") == "test"
    assert default_split("princeton-nlp/SWE-bench_Lite_bm25_13K") == "test"
    assert default_split("SWE-bench/SWE-bench_Multilingual") == "test"
    assert default_split("SWE-bench/SWE-smith") == "train"
    with pytest.raises(UserError, match="has no splits; drop --split test"):
        load_instances(VERIFIED, split="test")


# ---------------------------------------------------------------- skip rules


def test_skip_empty_problem_statements_and_other_languages(caplog):
    django, flask = load_instances(VERIFIED)
    [smith] = load_instances(SWESMITH)
    go = Instance(instance_id="go1", problem_statement="x", patch="diff --git a/main.go b/main.go\n")
    tagged = Instance(instance_id="rs1", problem_statement="x", patch="", language="Rust")
    empty = smith.model_copy(update={"instance_id": "empty", "problem_statement": "  \n"})
    unknown = Instance(instance_id="nothing", problem_statement="x")
    assert [instance_language(i) for i in (django, flask, smith, go, tagged, unknown)] == [
        "python", "python", "python", "go", "rust", None]
    every = [django, go, empty, flask, tagged, smith, unknown]
    kept, skipped = skip_instances(every, empty_problem_statement=True, languages=["python"])
    assert [i.instance_id for i in kept] == [django.instance_id, flask.instance_id, smith.instance_id]
    assert skipped == {"empty problem statement": 1, "language go": 1, "language rust": 1, "language unknown": 1}
    assert "skipped 4 of 7 instances" in caplog.text
    # Nothing asked, nothing skipped.
    assert skip_instances(every) == (every, {})


# ---------------------------------------------------------------- SWE-bench's test spec and grading


def test_spec_is_swebench_make_test_spec_for_its_scripts(offline_swebench):
    from swebench.harness.test_spec.test_spec import make_test_spec

    from sweagent_oec.harness.swebench import make_spec, swebench_row

    for instance, row in zip(load_instances(VERIFIED), raw_rows()):
        assert swebench_row(instance)["patch"] == row["patch"]
        ours, theirs = make_spec(instance), make_test_spec(row)
        assert ours.eval_script == theirs.eval_script and ours.install_repo_script == theirs.install_repo_script
        assert (ours.FAIL_TO_PASS, ours.PASS_TO_PASS) == (theirs.FAIL_TO_PASS, theirs.PASS_TO_PASS)
        assert (ours.repo, ours.version, ours.language) == (theirs.repo, theirs.version, theirs.language)
        assert row["test_patch"] in ours.eval_script and ": '>>>>> Start Test Output'" in ours.eval_script
    django, flask = (make_spec(i) for i in load_instances(VERIFIED))
    assert "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 auth_tests.test_validators" in django.eval_script
    assert "pytest -rA tests/test_blueprints.py" in flask.eval_script


def test_unsupported_repo_or_version_is_named():
    pytest.importorskip("swebench")
    from sweagent_oec.harness.swebench import make_spec, unsupported

    row = raw_rows()[1]
    assert unsupported(Instance.model_validate(row)) is None
    assert "version '9.9' is not in swebench's specs" in unsupported(Instance.model_validate({**row, "version": "9.9"}))
    assert "repo 'me/mine' is not in swebench's specs" in unsupported(Instance.model_validate({**row, "repo": "me/mine"}))
    with pytest.raises(UserError, match="me/mine"):
        make_spec(Instance.model_validate({**row, "repo": "me/mine"}))


def test_choose_harness():
    from sweagent_oec.harness.swebench import choose_harness

    bench = load_instances(VERIFIED)
    [smith] = load_instances(SWESMITH)
    assert choose_harness("auto", bench) == "swebench"
    assert choose_harness("auto", [smith]) == "swesmith"
    with pytest.raises(UserError, match="their `patch` is the fix.*--harness swebench"):
        choose_harness("auto", [smith, *bench])
    with pytest.raises(UserError, match="grades SWE-bench instances only"):
        choose_harness("swebench", [smith])
    with pytest.raises(UserError, match="--harness must be one of"):
        choose_harness("sweb", bench)


def test_run_batch_skips_and_counts(tmp_path):
    """run-batch --skip-empty-problem-statements --languages python: skipped rows are never run."""
    import subprocess
    import sys

    from sweagent_oec.tasks.bundled import materialize_tinycalc

    task = materialize_tinycalc(tmp_path).model_dump(mode="json")
    rows = [task, {**task, "instance_id": "empty__x.1", "problem_statement": " "},
            {**task, "instance_id": "go__x.1", "patch": "diff --git a/main.go b/main.go\n"}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = Path(__file__).parent.parent / "config" / "replay_tinycalc.yaml"
    done = subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "run-batch", "-c", str(config), "-i", "rows.jsonl",
                           "-o", "out", "--no-progress", "--skip-empty-problem-statements", "--languages", "python"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "300"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped 2 of 3 instances (empty problem statement: 1, language go: 1)" in done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir() and not p.name.startswith(".")) == [task["instance_id"]]


def test_the_judge_sees_swebench_gold_fix_as_it_is():
    """failure_categorization's judge input: SWE-bench's fix unchanged, SWE-smith's bug reversed."""
    from failure_categorization.judge_input import gold_fix, reverse_patch

    django, flask = load_instances(VERIFIED)
    [smith] = load_instances(SWESMITH)
    assert gold_fix(flask) == raw_rows()[1]["patch"] and "+        if not name:" in gold_fix(flask)
    assert gold_fix(smith) == reverse_patch(smith.patch) and gold_fix(None) == ""
