"""Images up front: `images pull` with progress and a one-line failure per image, and a missing
engine as one error before any instance starts."""

import os
import subprocess
import sys

import pytest
import yaml

from sweagent_oec.tasks.instances import write_instances_jsonl
from tests.agent_helpers import tinycalc
from tests.docker_engine import TEST_REPO, docker_host  # noqa: F401  (fixture)

CLI = [sys.executable, "-m", "sweagent_oec.cli"]


def cli(*args, cwd, env=None):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})},
                          timeout=600)


@pytest.mark.docker
def test_images_pull_keeps_present_images_and_reports_what_failed(docker_host, tmp_path):  # noqa: F811
    base = tinycalc(tmp_path)
    present = base.model_copy(update={"instance_id": "here", "repo": TEST_REPO})
    missing = base.model_copy(update={"instance_id": "gone", "repo": "oec/none", "image_name": "localhost:1/oec-missing:nope"})
    write_instances_jsonl(tmp_path / "i.jsonl", [present, missing])
    done = cli("images", "pull", "-i", str(tmp_path / "i.jsonl"), "--no-progress", cwd=tmp_path, env={"DOCKER_HOST": docker_host})
    assert done.returncode == 1
    assert "2 instances: 1 images present, 0 pulled, 1 failed" in done.stdout
    assert "failed: localhost:1/oec-missing:nope:" in done.stdout and "Traceback" not in done.stderr


def test_a_missing_engine_is_one_error_before_any_instance_starts(tmp_path):
    base = tinycalc(tmp_path)
    write_instances_jsonl(tmp_path / "i.jsonl", [base.model_copy(update={"instance_id": f"t{k}"}) for k in range(3)])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"agent": {"model": {"name": "replay", "replay_path": "x.jsonl"}},
                                                      "env": {"type": "docker"}}))
    (tmp_path / "x.jsonl").write_text("")
    nowhere = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    run = cli("run-batch", "-c", str(tmp_path / "c.yaml"), "-i", str(tmp_path / "i.jsonl"), "-o", str(tmp_path / "out"),
              cwd=tmp_path, env=nowhere)
    assert run.returncode != 0 and "no Docker engine answers" in run.stderr
    assert len([line for line in run.stderr.splitlines() if "error" in line.lower()]) == 1
    assert not list((tmp_path).glob("out/*/*.traj"))  # nothing started, nothing recorded as an instance error
    (tmp_path / "p.json").write_text('{"t0": {"instance_id": "t0", "model_name_or_path": "m", "model_patch": "diff"}}')
    ev = cli("eval", "--instances", str(tmp_path / "i.jsonl"), "--predictions", str(tmp_path / "p.json"), "--run-id", "r",
             "--runtime", "docker", "--output-dir", str(tmp_path / "logs"), cwd=tmp_path, env=nowhere)
    assert ev.returncode != 0 and "no Docker engine answers" in ev.stderr and not (tmp_path / "logs").exists()
