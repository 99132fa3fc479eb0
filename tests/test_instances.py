"""Instance loaders: JSON, JSONL, `datasets` folders, SWE-smith's real instance, selection, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweagent_oec.errors import UserError
from sweagent_oec.tasks.instances import Instance, get_instance, load_instances, select_instances, write_instances_jsonl

FIXTURE = next((Path(__file__).parent / "data" / "fixtures" / "swesmith").glob("instance.*.json"))


def rows(n: int) -> list[dict]:
    return [{"instance_id": f"owner__repo.abc.func_pm_op_change__{i:08d}", "repo": "owner/repo", "FAIL_TO_PASS": [f"t.py::f{i}"],
             "PASS_TO_PASS": [], "patch": "diff", "extra_field": i} for i in range(n)]


def test_fixture_loads_unchanged():
    original = json.loads(FIXTURE.read_text())
    [instance] = load_instances(FIXTURE)
    dumped = instance.model_dump()
    assert {k: dumped[k] for k in original} == original
    assert instance.local is None


def test_json_object_list_and_jsonl(tmp_path):
    data = rows(3)
    (tmp_path / "one.json").write_text(json.dumps(data[0]))
    (tmp_path / "list.json").write_text(json.dumps(data))
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in data) + "\n\n")
    assert [i.instance_id for i in load_instances(tmp_path / "one.json")] == [data[0]["instance_id"]]
    assert [i.instance_id for i in load_instances(str(tmp_path / "list.json"))] == [r["instance_id"] for r in data]
    loaded = load_instances(tmp_path / "rows.jsonl")
    assert [i.model_dump()["extra_field"] for i in loaded] == [0, 1, 2]  # unknown fields are kept


def test_jsonl_named_json_is_read_as_jsonl(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text("\n".join(json.dumps(r) for r in rows(2)))
    assert len(load_instances(path)) == 2


def test_datasets_folder_with_json_string_lists(tmp_path):
    import datasets

    data = [{**r, "FAIL_TO_PASS": json.dumps(r["FAIL_TO_PASS"]), "PASS_TO_PASS": "[]"} for r in rows(4)]
    datasets.Dataset.from_list(data).save_to_disk(str(tmp_path / "ds"))
    loaded = load_instances(tmp_path / "ds")
    assert [i.FAIL_TO_PASS for i in loaded] == [[f"t.py::f{i}"] for i in range(4)]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(data)}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_instances(tmp_path / "dd", split="test")) == 4
    assert len(load_instances(tmp_path / "dd")) == 4  # no `train`: the only split
    datasets.DatasetDict({"test": datasets.Dataset.from_list(data), "dev": datasets.Dataset.from_list(data[:1])}
                         ).save_to_disk(str(tmp_path / "dd2"))
    with pytest.raises(UserError, match="no split 'train'.*test"):
        load_instances(tmp_path / "dd2")


def test_round_trip_with_local_task(tmp_path):
    instance = Instance.model_validate({**rows(1)[0], "local": {"repo_dir": "/r", "venv": "/v", "env": {"PYTHONPATH": "src"}}})
    write_instances_jsonl(tmp_path / "out.jsonl", [instance, instance])
    again = load_instances(tmp_path / "out.jsonl")
    assert again == [instance, instance]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.json", '{"instance_id": "a",\n  oops}', r"bad\.json:2: not valid JSON"),
        ("bad.jsonl", json.dumps(rows(1)[0]) + "\n{nope\n", r"bad\.jsonl:2: not valid JSON"),
        ("noid.jsonl", json.dumps(rows(1)[0]) + "\n" + json.dumps({"repo": "x"}) + "\n", r"noid\.jsonl:2: row has no 'instance_id'"),
        ("noid.json", json.dumps([rows(1)[0], {"repo": "x"}]), r"noid\.json\[1\]: row has no 'instance_id'"),
        ("scalar.json", "[1]", r"scalar\.json\[0\]: expected a JSON object"),
        ("badfield.jsonl", json.dumps({"instance_id": "a", "FAIL_TO_PASS": 3}), r"badfield\.jsonl:1: instance 'a' field 'FAIL_TO_PASS'"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=message):
        load_instances(tmp_path / name)


def test_missing_path_and_non_dataset_folder(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        load_instances(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="not a `datasets` folder"):
        load_instances(tmp_path)


def test_unreachable_hub_dataset_is_one_user_error(tmp_path):
    # Offline mode makes the hub answer at once (this machine has no route to it either way).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = "from sweagent_oec.tasks.instances import load_instances; load_instances('SWE-bench/SWE-smith')"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "UserError: cannot load Hugging Face dataset 'SWE-bench/SWE-smith'" in done.stderr
    assert "offline" in done.stderr


def test_select_shuffle_filter_slice():
    instances = [Instance.model_validate(r) for r in rows(10)]
    ids = [i.instance_id for i in instances]
    assert [i.instance_id for i in select_instances(instances, slice="2:5")] == ids[2:5]
    assert [i.instance_id for i in select_instances(instances, slice=":3")] == ids[:3]
    assert [i.instance_id for i in select_instances(instances, slice="::4")] == ids[::4]
    assert [i.instance_id for i in select_instances(instances, slice="7")] == ids[:7]
    assert [i.instance_id for i in select_instances(instances, filter=r".*0000000[13]$")] == [ids[1], ids[3]]
    shuffled = select_instances(instances, shuffle=True, seed=1)
    assert sorted(i.instance_id for i in shuffled) == ids and [i.instance_id for i in shuffled] != ids
    assert select_instances(instances, shuffle=True, seed=1) == shuffled
    assert select_instances(instances, shuffle=True, seed=2) != shuffled
    # Shuffle first, then slice (as SWE-agent does): the slice is of the shuffled order.
    assert select_instances(instances, slice="0:3", shuffle=True, seed=1) == shuffled[:3]
    assert select_instances(instances) == instances


@pytest.mark.parametrize("kwargs, message", [({"slice": "a:b"}, "bad slice"), ({"slice": "1:2:3:4"}, "bad slice"),
                                             ({"slice": "::0"}, "step cannot be 0"), ({"filter": "("}, "bad --filter regex")])
def test_select_bad_input(kwargs, message):
    with pytest.raises(UserError, match=message):
        select_instances([Instance(instance_id="a")], **kwargs)


def test_get_instance_names_file_and_close_match():
    instances = load_instances(FIXTURE)
    assert get_instance(instances, "pandas-dev__pandas.95280573.pr_53652") is instances[0]
    with pytest.raises(UserError) as e:
        get_instance(instances, "pandas-dev__pandas.95280573.pr_5365", source=FIXTURE)
    assert str(FIXTURE) in str(e.value)
    assert "did you mean 'pandas-dev__pandas.95280573.pr_53652'" in str(e.value)
    with pytest.raises(UserError, match="has no instances"):
        get_instance([], "x", source="empty.jsonl")

