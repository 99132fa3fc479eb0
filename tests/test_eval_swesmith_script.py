"""scripts/eval_swesmith.sh as a user runs it: only its documented variables, SWE-smith's layout in
Docker (podman), its defaults (docker runtime, SWE-smith grading); a first try on the wrong runtime
is not taken as finished work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docker_engine import ROOT, docker_host  # noqa: F401  (fixture)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = "oec__tinycalcsmith.00000001"  # SWE-smith names its image from this
IMAGE = "swebench/swesmith.x86_64.oec_1776_tinycalcsmith.00000001"
GIT_ENV = {"GIT_AUTHOR_NAME": "oec", "GIT_AUTHOR_EMAIL": "oec@localhost", "GIT_COMMITTER_NAME": "oec",
           "GIT_COMMITTER_EMAIL": "oec@localhost", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": "/tmp"}


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("OEC_PODMAN_DIR", "/tmp/oec-podman") + "/containers.conf"}
    return subprocess.run(["podman", *args], env=env, check=check, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smith_instance(docker_host, tmp_path_factory):  # noqa: F811
    """tinycalc in SWE-smith's layout: /testbed at the correct code, the bug committed on a branch
    named after the instance; a root conftest.py so SWE-smith's `pytest <files>` imports the code."""
    from sweagent_oec.tasks.bundled import materialize_tinycalc

    work = tmp_path_factory.mktemp("smith")
    task = materialize_tinycalc(work)
    repo = Path(task.local.repo_dir)
    (repo / "conftest.py").write_text("# the repo root on sys.path, as SWE-smith's images have it\n")
    for args in (["add", "-A"], ["commit", "-q", "-m", "conftest"], ["checkout", "-q", "-b", task.instance_id]):
        subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True)
    subprocess.run(["git", "apply", "-"], cwd=repo, env=GIT_ENV, input=task.patch, text=True, check=True)
    for args in (["commit", "-qam", "Bug Patch"], ["checkout", "-q", "main"]):
        subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True)
    # Rebuilt when the task changes: the label is the commits it was made from.
    recipe = "-".join(subprocess.run(["git", "rev-parse", "main", task.instance_id], cwd=repo, env=GIT_ENV, check=True,
                                     capture_output=True, text=True).stdout.split())
    have = _podman("image", "inspect", "--format", "{{ index .Labels \"oec.recipe\" }}", IMAGE, check=False)
    if have.returncode != 0 or have.stdout.strip() != recipe:
        name = "oec-build-tinycalcsmith"
        _podman("rm", "-f", name, check=False)
        try:
            _podman("run", "--name", name, "--network", "none", "-v", f"{repo}:/src:ro", "oec-base:bookworm", "bash", "-euc",
                    "git clone -q --no-single-branch /src /testbed && cd /testbed && "
                    f"git branch -q {task.instance_id} origin/{task.instance_id} && git remote remove origin")
            _podman("commit", "-q", "--change", "WORKDIR /testbed", "--change", f"LABEL oec.recipe={recipe}", name, IMAGE)
        finally:
            _podman("rm", "-f", name, check=False)
    row = task.model_dump(mode="json", exclude={"local"})
    row["repo"] = REPO
    return row


def _script(env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("RUNTIME", "GRADING", "INSTANCES", "SPLIT", "RUN_ID")}
    return subprocess.run(["bash", str(ROOT / "scripts" / "eval_swesmith.sh"), *args], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=900)


def test_eval_swesmith_script_grades_in_docker_and_redoes_a_wrong_runtime_error(smith_instance, docker_host, tmp_path):  # noqa: F811
    iid = smith_instance["instance_id"]
    (tmp_path / "instances.jsonl").write_text(json.dumps(smith_instance) + "\n")
    # A run folder as run-batch leaves it: the replayed tinycalc fix, made in the image.
    batch = subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "run-batch", "-c", str(ROOT / "config" / "replay_tinycalc.yaml"),
                            "-i", "instances.jsonl", "-o", "trajectories/replay", "--no-progress", "env.type=docker",
                            f"env.docker_host={docker_host}"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert batch.returncode == 0, batch.stdout + batch.stderr
    env = {"INSTANCES": "instances.jsonl", "DOCKER_HOST": docker_host, "WORKERS": "1"}
    report = tmp_path / "logs" / "run_evaluation" / "replay" / iid / "report.json"

    # A first try with RUNTIME=local: the instance has no local task, so it is an error...
    wrong = _script({**env, "RUNTIME": "local"}, "trajectories/replay", cwd=tmp_path)
    assert wrong.returncode == 0, wrong.stdout + wrong.stderr
    assert json.loads(report.read_text())["error"].startswith("environment_error")
    # ...and the documented defaults (docker, swesmith grading) evaluate it again, and it resolves.
    done = _script(env, "trajectories/replay", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    graded = json.loads(report.read_text())
    assert graded["resolved"] is True and "error" not in graded, graded
    assert graded["tests_status"]["FAIL_TO_PASS"]["success"] == smith_instance["FAIL_TO_PASS"]
    settings = json.loads(report.with_name("eval_settings.json").read_text())
    assert (settings["runtime"], settings["grading"]) == ("docker", "swesmith")
    aggregate = json.loads((report.parent.parent / "report.json").read_text())
    assert (aggregate["total"], aggregate["resolved"]) == (1, 1)
    assert "on docker (swesmith grading)" in done.stderr
