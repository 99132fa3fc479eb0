"""The docker runtime: image naming (no engine), and start, task state and cleanup on a real engine.

The behaviour it shares with the local runtime is checked by tests/test_runtime_contract.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import docker.errors
import pytest

from sweagent_oec.env import make_runtime
from sweagent_oec.env.docker import DockerRuntime, connect, image_candidates, swesmith_image_name
from sweagent_oec.env.runtime import EnvConfig, RuntimeError_
from sweagent_oec.errors import UserError
from sweagent_oec.tasks.bundled import materialize_tinycalc
from sweagent_oec.tasks.instances import Instance
from tests.docker_engine import ROOT, TEST_IMAGE, TEST_REPO, docker_client, docker_host  # noqa: F401  (fixtures)

FIXTURE = ROOT / "tests/data/fixtures/swesmith/instance.pandas-dev__pandas.95280573.pr_53652.json"


# ---------------------------------------------------------------- naming, no engine


@pytest.mark.parametrize("repo, image", [
    ("swesmith/pandas-dev__pandas.95280573", "swebench/swesmith.x86_64.pandas-dev_1776_pandas.95280573"),
    ("pandas-dev__pandas.95280573", "swebench/swesmith.x86_64.pandas-dev_1776_pandas.95280573"),
    ("Mimino666__langdetect.a1598f1a", "swebench/swesmith.x86_64.mimino666_1776_langdetect.a1598f1a"),
    ("pydantic__pydantic.acb0f10f", "swebench/swesmith.x86_64.pydantic_1776_pydantic.acb0f10f"),
    ("oec/tinycalc", None),
    ("pandas-dev/pandas", None),
    ("pandas-dev__pandas", None),
    ("pandas-dev__pandas.9528057", None),
])
def test_swesmith_image_name(repo, image):
    assert swesmith_image_name(repo) == image


def test_image_candidates_order():
    instance = Instance(**json.loads(FIXTURE.read_text()))
    assert image_candidates(instance, EnvConfig(type="docker")) == [
        "swebench/swesmith.x86_64.pandas-dev_1776_pandas.95280573", "swesmith.x86_64.pandas-dev__pandas.95280573"]
    assert image_candidates(instance, EnvConfig(type="docker", image_name="mine:1")) == ["mine:1"]
    assert image_candidates(Instance(instance_id="x", repo="oec/tinycalc"), EnvConfig(type="docker")) == []


def test_no_engine_is_one_clear_user_error(tmp_path):
    instance = materialize_tinycalc(tmp_path)
    with pytest.raises(UserError, match=r"no Docker engine answers at unix:///nonexistent/oec.sock .*setup_podman.sh"):
        make_runtime(instance, EnvConfig(type="docker", docker_host="unix:///nonexistent/oec.sock"))


# ---------------------------------------------------------------- on the engine


def _containers(client) -> set[str]:
    return {c.id for c in client.containers.list(all=True, filters={"label": "sweagent-oec=1"})}


@pytest.mark.docker
def test_derived_image_task_state_and_close(docker_host, docker_client, tmp_path):
    instance = materialize_tinycalc(tmp_path).model_copy(update={"repo": TEST_REPO})
    before = _containers(docker_client)
    rt = make_runtime(instance, EnvConfig(type="docker", docker_host=docker_host))
    try:
        assert isinstance(rt, DockerRuntime) and rt.image == TEST_IMAGE
        assert rt.info.as_dict()["type"] == "docker" and rt.info.workdir == "/testbed"
        # The instance branch was checked out (no fallback note) and is the one commit left.
        assert not [n for n in rt.info.notes if "no branch" in n]
        assert rt.run("git rev-parse HEAD", timeout=10).output.strip() == rt.base_commit
        assert rt.run("git for-each-ref --format='%(refname)'", timeout=10).output.split() == ["refs/heads/main"]
        assert "(len(values) + 1)" in rt.read_file("calc.py")
        # The image's python runs the task's tests: the bug fails exactly FAIL_TO_PASS.
        tests = rt.run("python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tail -1", timeout=60).output
        assert "2 failed, 3 passed" in tests, tests
        (new,) = _containers(docker_client) - before
    finally:
        rt.close()
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(new)
    with pytest.raises(RuntimeError_):
        rt.run("echo hi", timeout=5)


@pytest.mark.docker
def test_fallback_without_branch_applies_the_patch(docker_host, tmp_path):
    # tinycalc is built reproducibly, so the image holds this base_commit; no branch has this id.
    instance = materialize_tinycalc(tmp_path).model_copy(update={"instance_id": "oec__tinycalc.00000000.other"})
    with make_runtime(instance, EnvConfig(type="docker", docker_host=docker_host, image_name=TEST_IMAGE)) as rt:
        assert [n for n in rt.info.notes if "no branch oec__tinycalc.00000000.other" in n]
        assert "(len(values) + 1)" in rt.read_file("/testbed/calc.py")
        assert rt.run("git status --porcelain; git rev-list --count HEAD", timeout=10).output == "1\n"


@pytest.mark.docker
def test_patch_that_does_not_apply_is_a_user_error_and_leaves_no_container(docker_host, docker_client, tmp_path):
    instance = materialize_tinycalc(tmp_path).model_copy(
        update={"instance_id": "oec__tinycalc.00000000.broken", "patch": "diff --git a/nope.py b/nope.py\n--- a/nope.py\n"
                "+++ b/nope.py\n@@ -1 +1 @@\n-a\n+b\n"})
    before = _containers(docker_client)
    with pytest.raises(UserError, match="its patch does not apply"):
        make_runtime(instance, EnvConfig(type="docker", docker_host=docker_host, image_name=TEST_IMAGE))
    assert _containers(docker_client) == before


@pytest.mark.docker
def test_failing_startup_command_leaves_no_container(docker_host, docker_client, tmp_path):
    instance = materialize_tinycalc(tmp_path)
    before = _containers(docker_client)
    with pytest.raises(RuntimeError_, match="startup command 'false' failed"):
        make_runtime(instance, EnvConfig(type="docker", docker_host=docker_host, image_name=TEST_IMAGE,
                                         startup_commands=["true", "false"]))
    assert _containers(docker_client) == before


@pytest.mark.docker
def test_missing_image_is_a_user_error(docker_host, tmp_path):
    instance = materialize_tinycalc(tmp_path)
    with pytest.raises(UserError, match="image oec-missing:nope is not in the engine"):
        make_runtime(instance, EnvConfig(type="docker", docker_host=docker_host, image_name="oec-missing:nope"))


@pytest.mark.docker
def test_network_is_off_unless_asked_for(docker_host):
    client = connect(docker_host)
    with DockerRuntime(client, TEST_IMAGE, EnvConfig(type="docker")) as rt:
        assert rt.run("ls /sys/class/net", timeout=10).output.split() == ["lo"]
    with DockerRuntime(client, TEST_IMAGE, EnvConfig(type="docker", network=True)) as rt:
        assert len(rt.run("ls /sys/class/net", timeout=10).output.split()) > 1


@pytest.mark.docker
def test_container_is_removed_at_interpreter_exit(docker_host, docker_client):
    # The child never calls close(): the atexit hook must remove the container.
    script = ("import sys\nfrom sweagent_oec.env.docker import DockerRuntime, connect\n"
              "from sweagent_oec.env.runtime import EnvConfig\n"
              f"rt = DockerRuntime(connect({docker_host!r}), {TEST_IMAGE!r}, EnvConfig(type='docker'))\n"
              "print(rt._container.id)\nassert rt.run('echo hi', timeout=10).output == 'hi\\n'\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(done.stdout.strip())


@pytest.mark.docker
def test_engine_enforces_the_limits_without_privileges(docker_host, docker_client, tmp_path):
    instance = materialize_tinycalc(tmp_path).model_copy(update={"repo": TEST_REPO})
    rt = make_runtime(instance, EnvConfig(type="docker", docker_host=docker_host, max_processes=64, memory_limit="256m"))
    try:
        assert rt.info.as_dict()["limits"] == {"mechanism": "docker", "max_processes": 64, "memory_limit": 256 * 2**20}
        host_config = docker_client.containers.get(rt._container.id).attrs["HostConfig"]
        assert host_config["PidsLimit"] == 64 and host_config["Memory"] == 256 * 2**20
        assert not host_config.get("Privileged") and not host_config.get("CapAdd")
        hog = rt.run("python3 -c 'b = []\nwhile True: b.append(bytearray(32 * 2**20))'", timeout=60)
        assert hog.exit_code == 137  # the OOM killer, inside the container's limit
        assert rt.run("echo alive", timeout=10).output == "alive\n"
    finally:
        rt.close()
