"""A submission is the agent's source change only: no bytecode or cache litter, so `git apply` takes it."""

import subprocess

from sweagent_oec.data.trajectory import load_trajectory
from sweagent_oec.runner import run_instance
from tests.agent_helpers import SOLUTION, replay_config, tinycalc, write_replay


def test_submission_leaves_out_build_litter_and_applies_cleanly(tmp_path):
    instance = tinycalc(tmp_path)
    steps = [line for line in SOLUTION.read_text().splitlines() if line.strip()]
    # Litter of every kind the pathspecs name, made by the agent before it submits.
    litter = {"thought": "", "action": "mkdir -p pkg.egg-info .pytest_cache/v && touch pkg.egg-info/PKG-INFO .pytest_cache/v/x"
              " && python -c 'import py_compile; py_compile.compile(\"calc.py\", cfile=\"calc.pyc\")'"}
    import json

    items = [json.loads(s) for s in steps]
    replay = write_replay(tmp_path, items[:-1] + [litter] + items[-1:])
    path, info = run_instance(replay_config(replay), instance, tmp_path / "out")
    assert info["exit_status"] == "submitted"
    patch = load_trajectory(path).info.submission
    assert "calc.py" in patch
    for junk in ("__pycache__", ".pyc", ".pytest_cache", "egg-info", "Binary files"):
        assert junk not in patch, junk
    repo = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", instance.local.repo_dir, str(repo)], check=True)
    subprocess.run(["git", "apply", "-"], input=instance.patch, text=True, cwd=repo, check=True)  # the task's bug
    subprocess.run(["git", "apply", "--check", "-"], input=patch, text=True, cwd=repo, check=True)
