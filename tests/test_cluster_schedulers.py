"""Array-job schedulers without Ray: `--shard slurm` and the shipped sbatch scripts."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from sweagent_oec.batch import shard
from sweagent_oec.errors import UserError
from tests.agent_helpers import tinycalc

ROOT = Path(__file__).parent.parent


def test_slurm_array_tasks_partition_the_instances(tmp_path, monkeypatch):
    base = tinycalc(tmp_path)
    instances = [base.model_copy(update={"instance_id": f"i{k}"}) for k in range(10)]
    parts = []
    for task in range(5, 8):  # --array=5-7: ids need not start at 0
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
        monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
        parts.append([i.instance_id for i in shard(instances, "slurm")])
    assert sorted(sum(parts, [])) == sorted(i.instance_id for i in instances) and all(parts)
    assert parts[0] == [i.instance_id for i in shard(instances, "0/3")]
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    with pytest.raises(UserError, match="SLURM_ARRAY_TASK_ID"):
        shard(instances, "slurm")


def test_sbatch_scripts_parse_and_the_eval_split_covers_every_prediction(tmp_path):
    for script in sorted((ROOT / "scripts" / "slurm").glob("*.sbatch")):
        subprocess.run(["bash", "-n", str(script)], check=True)
    # The eval array's own splitter, run as each task would.
    text = (ROOT / "scripts" / "slurm" / "eval_array.sbatch").read_text()
    splitter = text.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    preds = {f"id{k}": {"instance_id": f"id{k}", "model_patch": "x", "model_name_or_path": "m"} for k in range(7)}
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    seen = []
    for task in range(3):
        out = tmp_path / f"part{task}.json"
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "3"}
        subprocess.run(["python3", "-", str(tmp_path / "preds.json"), str(out)], input=splitter, text=True, env=env, check=True)
        seen += list(json.loads(out.read_text()))
    assert sorted(seen) == sorted(preds)
