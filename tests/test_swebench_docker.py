"""SWE-bench on a Docker-API engine (podman): an image in SWE-bench's layout, built here.

The image holds the bundled tinycalc task the way SWE-bench's instance images hold a repo: /testbed
is a git repository at `base_commit` (the code with the issue; the tests that show it are only in
`test_patch`) plus SWE-bench's own empty "SWE-bench" commit on top, and /opt/miniconda3 has just
enough of conda (`bin/activate`, `conda activate testbed`) for SWE-bench's eval script to run, with
a real Python environment (a venv of the image's python3 and pytest) as `envs/testbed`. The task
wears the `pallets/flask` 2.3 row of SWE-bench's specs table (`pytest -rA`, pytest log parser), so
SWE-bench's package writes its eval script and grades its log unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from tests.docker_engine import ROOT, docker_host  # noqa: F401  (fixture)

pytest.importorskip("swebench")
pytestmark = pytest.mark.docker

INSTANCE_ID = "pallets__flask-90000"
IMAGE = "swebench/sweb.eval.x86_64.pallets_1776_flask-90000:latest"
GIT_ENV = {"GIT_AUTHOR_NAME": "oec", "GIT_AUTHOR_EMAIL": "oec@localhost", "GIT_COMMITTER_NAME": "oec",
           "GIT_COMMITTER_EMAIL": "oec@localhost", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": "/tmp"}
# Just enough conda for SWE-bench's scripts (`source /opt/miniconda3/bin/activate; conda activate testbed`)
# and for the docker runtime's session (etc/profile.d/conda.sh).
CONDA = """conda() {
  if [ "$1" = activate ]; then
    CONDA_DEFAULT_ENV="${2:-base}"; export CONDA_DEFAULT_ENV
    PATH="/opt/miniconda3/envs/${2:-base}/bin:$PATH"; export PATH
  fi
}
"""
PYTEST = "#!/opt/miniconda3/envs/testbed/bin/python\nimport sys\nfrom pytest import console_main\nsys.exit(console_main())\n"
F2P = ["tests/test_calc.py::test_mean", "tests/test_calc.py::test_mean_single"]
P2P = ["tests/test_calc.py::test_add", "tests/test_calc.py::test_mean_empty", "tests/test_calc.py::test_clamp"]


def _git(repo: Path, *args: str, input: str | None = None) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True,
                          input=input).stdout


def _without_tests(text: str, names: list[str]) -> str:
    """The test file minus these test functions (each is a `def` block followed by a blank line)."""
    blocks = text.split("\n\n\n")
    return "\n\n\n".join(b for b in blocks if not any(f"def {n}(" in b for n in names))


def _make_repo(dest: Path) -> dict:
    """tinycalc in SWE-bench's shape: base commit = the bug, tests for it in test_patch, fix = gold patch."""
    source = resources.files("sweagent_oec.tasks") / "bundled" / "tinycalc"
    repo = dest / "repo"
    repo.mkdir(parents=True)
    full_tests = (source / "tests" / "test_calc.py").read_text()
    (repo / "tests").mkdir()
    (repo / "calc.py").write_text((source / "calc.py").read_text())
    (repo / "conftest.py").write_text("# makes the repo root importable for pytest\n")
    (repo / "tests" / "test_calc.py").write_text(_without_tests(full_tests, ["test_mean", "test_mean_single"]))
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "apply", "-", input=(source / "bug.patch").read_text())
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "tinycalc with the issue")
    base = _git(repo, "rev-parse", "HEAD").strip()
    (repo / "tests" / "test_calc.py").write_text(full_tests)
    test_patch = _git(repo, "diff")
    _git(repo, "checkout", "-q", "--", ".")
    _git(repo, "apply", "-R", "-", input=(source / "bug.patch").read_text())
    gold = _git(repo, "diff")
    _git(repo, "checkout", "-q", "--", ".")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "SWE-bench")  # as SWE-bench's repo script leaves it
    return {
        "repo": "pallets/flask", "instance_id": INSTANCE_ID, "base_commit": base, "patch": gold, "test_patch": test_patch,
        "problem_statement": "`calc.mean` returns the wrong value: `mean([1, 2, 3, 4])` gives 2.0, expected 2.5.",
        "hints_text": "", "created_at": "2026-01-01T00:00:00Z", "version": "2.3",
        "FAIL_TO_PASS": json.dumps(F2P), "PASS_TO_PASS": json.dumps(P2P), "environment_setup_commit": base,
    }


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("OEC_PODMAN_DIR", "/tmp/oec-podman") + "/containers.conf"}
    return subprocess.run(["podman", *args], env=env, check=check, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def swebench_task(docker_host, tmp_path_factory) -> dict:  # noqa: F811
    """The instance row; its image is built once per recipe (the repo is made the same way every time)."""
    work = tmp_path_factory.mktemp("swebench_image")
    row = _make_repo(work)
    recipe = hashlib.sha256(json.dumps([row, CONDA, PYTEST]).encode()).hexdigest()[:16]
    have = _podman("image", "inspect", "--format", "{{ index .Labels \"oec.recipe\" }}", IMAGE, check=False)
    if have.returncode != 0 or have.stdout.strip() != recipe:
        (work / "activate").write_text(CONDA)
        (work / "pytest").write_text(PYTEST)
        name = f"oec-build-swebench-{recipe}"
        _podman("rm", "-f", name, check=False)
        try:
            _podman("run", "--name", name, "--network", "none", "-v", f"{work}:/src:ro", "oec-base:bookworm", "bash", "-euc", """
                git clone -q /src/repo /testbed && git -C /testbed remote remove origin
                mkdir -p /opt/miniconda3/bin /opt/miniconda3/etc/profile.d
                cp /src/activate /opt/miniconda3/bin/activate && cp /src/activate /opt/miniconda3/etc/profile.d/conda.sh
                python3 -m venv --without-pip --system-site-packages /opt/miniconda3/envs/testbed
                install -m 755 /src/pytest /opt/miniconda3/envs/testbed/bin/pytest""")
            _podman("commit", "-q", "--change", "WORKDIR /testbed", "--change", f"LABEL oec.recipe={recipe}", name, IMAGE)
        finally:
            _podman("rm", "-f", name, check=False)
    return row


def _oec(*args: str, cwd: Path, host: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": host, "OEC_SWEBENCH_NAMESPACE": "swebench", "OEC_SWEBENCH_TAG": "latest"}
    return subprocess.run([sys.executable, "-m", "sweagent_oec.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow  # ~80 s: a run-batch and five evaluations
def test_agent_starts_at_base_commit_and_swebench_grades(swebench_task, docker_host, tmp_path):  # noqa: F811
    from swebench.harness.grading import get_eval_report

    from sweagent_oec.harness.swebench import make_spec
    from sweagent_oec.tasks.instances import load_instances

    rows = tmp_path / "instances.jsonl"
    rows.write_text(json.dumps(swebench_task) + "\n")
    [instance] = load_instances(rows)
    assert instance.is_swebench and instance.patch == "" and instance.image_name == IMAGE

    # The agent (the replayed tinycalc solution) works in the image: it finds the issue in place at
    # base_commit (nothing injected, nothing fixed) and its fix is the submission.
    config = ROOT / "config" / "replay_tinycalc.yaml"
    batch = _oec("run-batch", "-c", str(config), "-i", str(rows), "-o", str(tmp_path / "traj"), "--no-progress",
                 "env.type=docker", f"env.docker_host={docker_host}", cwd=tmp_path, host=docker_host)
    assert batch.returncode == 0, batch.stdout + batch.stderr
    traj = json.loads((tmp_path / "traj" / INSTANCE_ID / f"{INSTANCE_ID}.traj").read_text())
    assert traj["info"]["exit_status"] == "submitted", traj["info"]
    assert any("the task state is base_commit (nothing injected)" in note for note in traj["environment"]["notes"]), traj["environment"]
    first = traj["trajectory"][0]["observation"]
    assert "(len(values) + 1)" in first  # the issue is there at the start: the gold fix was not applied
    submission = traj["info"]["submission"]
    assert "-    return sum(values) / (len(values) + 1)" in submission and "+    return sum(values) / len(values)" in submission
    assert "tests/" not in submission and "conftest" not in submission

    # SWE-bench's harness: the agent's patch and the gold patch resolve; a patch that changes
    # nothing relevant does not; a blank one is an error with its reason, as on the SWE-smith path.
    preds = {
        INSTANCE_ID: {"instance_id": INSTANCE_ID, "model_name_or_path": "student", "model_patch": submission},
    }
    noop = "diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644\n--- /dev/null\n+++ b/NOTES.md\n@@ -0,0 +1 @@\n+nothing here\n"
    runs = {"agent": submission, "noop": noop, "blank": ""}
    for run_id, patch in runs.items():
        preds[INSTANCE_ID]["model_patch"] = patch
        (tmp_path / f"{run_id}.json").write_text(json.dumps(preds))
        done = _oec("eval", "--instances", str(rows), "--predictions", str(tmp_path / f"{run_id}.json"), "--run-id", run_id,
                    "--output-dir", str(tmp_path / "eval"), "--harness", "swebench", "--timeout", "300",
                    cwd=tmp_path, host=docker_host)
        assert done.returncode == 0, done.stdout + done.stderr
    gold = _oec("eval", "--instances", str(rows), "--gold", "--run-id", "gold", "--output-dir", str(tmp_path / "eval"),
                "--timeout", "300", cwd=tmp_path, host=docker_host)  # --harness auto: SWE-bench rows
    assert gold.returncode == 0, gold.stdout + gold.stderr

    spec = make_spec(instance)
    outcome = {}
    for run_id in ("agent", "noop", "gold", "blank"):
        out = tmp_path / "eval" / run_id / INSTANCE_ID
        report = json.loads((out / "report.json").read_text())
        outcome[run_id] = (report["resolved"], report.get("error", "").split(":")[0])
        aggregate = json.loads((tmp_path / "eval" / run_id / "report.json").read_text())
        assert aggregate["total"] == 1 and aggregate["resolved"] == int(report["resolved"])
        if run_id == "blank":
            continue
        # The report is SWE-bench's own verdict on the same log, in our layout.
        log = (out / "test_output.txt").read_text()
        assert "+ : '>>>>> Start Test Output'" in log and "+ pytest -rA tests/test_calc.py" in log  # set -x echoes them
        pred = {"instance_id": INSTANCE_ID, "model_name_or_path": report["model_name_or_path"],
                "model_patch": (out / "patch.diff").read_text()}
        theirs = get_eval_report(spec, pred, str(out / "test_output.txt"), include_tests_status=True)[INSTANCE_ID]
        assert report == {**theirs, "model_name_or_path": pred["model_name_or_path"]}
        assert (out / "eval.sh").read_text() == spec.eval_script
    assert outcome == {"agent": (True, ""), "gold": (True, ""), "noop": (False, ""), "blank": (False, "empty_patch")}
    gold_report = json.loads((tmp_path / "eval" / "gold" / INSTANCE_ID / "report.json").read_text())
    assert gold_report["tests_status"]["FAIL_TO_PASS"] == {"success": F2P, "failure": []}
    noop_report = json.loads((tmp_path / "eval" / "noop" / INSTANCE_ID / "report.json").read_text())
    assert noop_report["tests_status"]["FAIL_TO_PASS"] == {"success": [], "failure": F2P}
    assert noop_report["tests_status"]["PASS_TO_PASS"] == {"success": P2P, "failure": []}

    # Resume: a second run over a graded instance leaves it alone (same settings).
    noop_report_path = tmp_path / "eval" / "noop" / INSTANCE_ID / "report.json"
    before = noop_report_path.stat().st_mtime_ns
    again = _oec("eval", "--instances", str(rows), "--predictions", str(tmp_path / "agent.json"), "--run-id", "noop",
                 "--output-dir", str(tmp_path / "eval"), "--harness", "swebench", "--timeout", "300", cwd=tmp_path, host=docker_host)
    assert again.returncode == 0, again.stderr
    assert noop_report_path.stat().st_mtime_ns == before and not json.loads(noop_report_path.read_text())["resolved"]


@pytest.mark.slow  # ~50 s: a run-batch and an evaluation
def test_eval_student_script(swebench_task, docker_host, tmp_path):  # noqa: F811
    """scripts/eval_student.sh end to end: the student (a loopback server speaking the OpenAI API,
    as vLLM does) alone on the SWE-bench instance, SWE-bench's grading, the score."""
    from tests.openai_server import OpenAIServer, Reply

    rows = tmp_path / "instances.jsonl"
    rows.write_text(json.dumps(swebench_task) + "\n")
    fix = "The mean divides by one too many.\n<function=bash><parameter=command>sed -i 's/(len(values) + 1)/len(values)/' calc.py</parameter></function>"
    with OpenAIServer([Reply(content=fix), Reply(content="Fixed.\n<function=submit></function>")]) as server:
        env = {**os.environ, "INSTANCES": str(rows), "STUDENT_API_BASE": server.url, "DOCKER_HOST": docker_host,
               "OUTPUT_DIR": str(tmp_path / "traj"), "EVAL_DIR": str(tmp_path / "eval"), "WORKERS": "1", "EVAL_WORKERS": "1"}
        done = subprocess.run(["bash", str(ROOT / "scripts" / "eval_student.sh"), str(tmp_path / "ckpt" / "student-r1")],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "vllm serve " + str(tmp_path / "ckpt" / "student-r1") + " --served-model-name student-r1 --host 127.0.0.1 --port 8000" in done.stderr
    assert server.requests and all(r["model"] == "student-r1" for r in server.requests)  # the student alone
    lines = done.stdout.splitlines()
    assert "resolved 1/1 = 100.0% (95% CI 2.5-100.0%, Clopper-Pearson)" in lines, done.stdout
    assert lines[lines.index("resolved 1/1 = 100.0% (95% CI 2.5-100.0%, Clopper-Pearson)") + 2].split() == ["submitted", "1"]
    report = json.loads((tmp_path / "eval" / "student_student-r1" / INSTANCE_ID / "report.json").read_text())
    assert report["resolved"] is True and report["model_name_or_path"]


def test_ungraded_instances_are_recorded_with_their_reason(swebench_task, docker_host, tmp_path):  # noqa: F811
    """Each way an instance cannot be graded gives an error report with its code; the batch goes on."""
    from sweagent_oec.env.runtime import EnvConfig
    from sweagent_oec.harness.evaluate import EvalOptions
    from sweagent_oec.harness.predictions import Prediction
    from sweagent_oec.harness.swebench import evaluate_swebench
    from sweagent_oec.tasks.instances import Instance

    slow_test = ("diff --git a/tests/test_slow.py b/tests/test_slow.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/test_slow.py\n"
                 "@@ -0,0 +1,5 @@\n+import time\n+\n+\n+def test_slow():\n+    time.sleep(60)\n")
    rows = {
        "bad_patch": {**swebench_task, "instance_id": "pallets__flask-90001"},
        "no_image": {**swebench_task, "instance_id": "pallets__flask-90002"},
        "unsupported": {**swebench_task, "instance_id": "pallets__flask-90003", "version": "0.1"},
        "timeout": {**swebench_task, "instance_id": "pallets__flask-90004", "test_patch": slow_test,
                    "FAIL_TO_PASS": json.dumps(["tests/test_slow.py::test_slow"])},
    }
    instances = [Instance.model_validate({**row, "image_name": IMAGE}) for row in rows.values()]
    instances[1] = instances[1].model_copy(update={"image_name": "localhost/oec-no-such-image:1"})
    patches = {"bad_patch": "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,1 +1,1 @@\n-no such line\n+x\n"}
    preds = {i.instance_id: Prediction(instance_id=i.instance_id, model_name_or_path="m",
                                       model_patch=patches.get(kind, swebench_task["patch"]))
             for kind, i in zip(rows, instances)}
    opts = EvalOptions(run_id="errors", output_dir=tmp_path, timeout=5, progress=False,
                       env=EnvConfig(type="docker", docker_host=docker_host))
    aggregate = evaluate_swebench(instances, preds, opts)
    codes = {kind: aggregate["errors"].get(i.instance_id, "").split(":")[0] for kind, i in zip(rows, instances)}
    assert codes == {"bad_patch": "patch_apply_failed", "no_image": "environment_error", "unsupported": "unsupported_repo",
                     "timeout": "timeout"}, aggregate["errors"]
    assert aggregate["total"] == aggregate["error"] == 4
    bad = tmp_path / "errors" / "pallets__flask-90001"
    assert ">>>>> Patch Apply Failed" in (bad / "run_instance.log").read_text() and not (bad / "test_output.txt").exists()
    slow = tmp_path / "errors" / "pallets__flask-90004" / "test_output.txt"
    assert slow.read_text().endswith("Timeout error: 5 seconds exceeded.")
    assert "version '0.1' is not in swebench's specs" in aggregate["errors"]["pallets__flask-90003"]


@pytest.mark.slow  # ~30 s: a run-batch
def test_eval_student_script_starts_and_stops_the_server(swebench_task, docker_host, tmp_path):  # noqa: F811
    """SERVE=start: the vLLM command runs in the background until the run is over, then is stopped.
    (The stand-in for vLLM records its arguments and waits; the test's loopback server answers.)"""
    from tests.openai_server import OpenAIServer, Reply

    rows = tmp_path / "instances.jsonl"
    rows.write_text(json.dumps(swebench_task) + "\n")
    fake = tmp_path / "fake_vllm.py"
    fake.write_text("import json, os, sys, time\n"
                    f"open({str(tmp_path / 'vllm.json')!r}, 'w').write(json.dumps({{'pid': os.getpid(), 'argv': sys.argv[1:]}}))\n"
                    "time.sleep(600)\n")
    with OpenAIServer([Reply(content="Nothing to do.\n<function=submit></function>")]) as server:
        env = {**os.environ, "INSTANCES": str(rows), "STUDENT_API_BASE": server.url, "DOCKER_HOST": docker_host,
               "OUTPUT_DIR": str(tmp_path / "traj"), "WORKERS": "1", "SERVE": "start", "STAGE": "generate",
               "VLLM": f"{sys.executable} {fake}", "VLLM_ARGS": "--max-model-len 4096", "PORT": "8123"}
        done = subprocess.run(["bash", str(ROOT / "scripts" / "eval_student.sh"), "/models/ckpt-7"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    started = json.loads((tmp_path / "vllm.json").read_text())
    assert started["argv"] == ["/models/ckpt-7", "--served-model-name", "ckpt-7", "--host", "127.0.0.1", "--port", "8123",
                               "--max-model-len", "4096"]
    assert not Path(f"/proc/{started['pid']}").exists() or "zombie" in Path(f"/proc/{started['pid']}/status").read_text().lower()
    assert (tmp_path / "traj" / INSTANCE_ID / f"{INSTANCE_ID}.traj").exists()
    assert "STAGE=eval" in done.stderr and not (tmp_path / "logs").exists()  # generation only
