"""What a user sees: run-batch's live rows per running instance under a real terminal, the summary on
lines of its own after it; `run` prints every step."""

import os
import pty
import re
import select
import subprocess
import sys

import yaml

from sweagent_oec.tasks.instances import write_instances_jsonl
from tests.agent_helpers import tinycalc
from tests.openai_server import OpenAIServer, Reply, tool_call

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def slow_student():
    def handler(request):
        step = sum(m["role"] == "assistant" for m in request["messages"])
        call = tool_call("submit", {}) if step >= 6 else tool_call("bash", {"command": f"echo working-on-step-{step}"})
        return Reply(content="", tool_calls=[call], delay=0.4)
    return OpenAIServer(handler)


def test_run_batch_under_a_terminal_shows_rows_then_a_summary_on_its_own_lines(tmp_path):
    base = tinycalc(tmp_path)
    write_instances_jsonl(tmp_path / "i.jsonl", [base.model_copy(update={"instance_id": f"tiny-{k}"}) for k in range(2)])
    with slow_student() as server:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({"agent": {
            "tools": {"parse_function": {"type": "function_calling"}},
            "model": {"name": "openai/student", "api_base": server.url, "api_key": "k", "per_instance_cost_limit": 0}}}))
        screen = run_in_terminal([sys.executable, "-m", "sweagent_oec.cli", "run-batch", "-c", str(tmp_path / "c.yaml"),
                                  "-i", str(tmp_path / "i.jsonl"), "-o", str(tmp_path / "out"), "-w", "2"], tmp_path)
    # Live rows: each running instance with its role, step and last action.
    assert re.search(r"tiny-0\s+agent\s+\d+\s+echo working-on-step-\d", screen), screen[-2000:]
    assert re.search(r"tiny-1\s+agent\s+\d+\s+echo working-on-step-\d", screen)
    assert "instance" in screen and "last action" in screen
    # The summary starts on a line of its own, and its table follows.
    lines = [line.strip() for line in screen.splitlines() if line.strip()]
    assert "2 run, 0 already done" in lines
    at = lines.index("2 run, 0 already done")
    assert lines[at + 1].startswith("exit status") and lines[at + 2].split() == ["submitted", "2"]


def run_in_terminal(cmd: list[str], cwd) -> str:
    primary, secondary = pty.openpty()
    process = subprocess.Popen(cmd, stdout=secondary, stderr=secondary, cwd=cwd, env={**os.environ, "COLUMNS": "160", "TERM": "xterm"})
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(primary, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data.decode(errors="replace"))
    assert process.wait(timeout=60) == 0, ANSI.sub("", "".join(chunks))[-2000:]
    return ANSI.sub("", "".join(chunks)).replace("\r", "\n")


def test_eval_shows_a_row_per_instance_being_graded(tmp_path):
    import json

    base = tinycalc(tmp_path)
    instances = [base.model_copy(update={"instance_id": f"tiny-{k}"}) for k in range(2)]
    write_instances_jsonl(tmp_path / "i.jsonl", instances)
    screen = run_in_terminal([sys.executable, "-m", "sweagent_oec.cli", "eval", "-i", str(tmp_path / "i.jsonl"), "--gold",
                              "--run-id", "g", "-o", str(tmp_path / "logs"), "-w", "2"], tmp_path)
    assert re.search(r"tiny-0\s.*testing", screen) and re.search(r"tiny-1\s.*testing", screen), screen[-2000:]
    assert re.search(r"eval g\s.*2/2\s+resolved 2, errors 0", screen)
    assert json.loads((tmp_path / "logs" / "g" / "report.json").read_text())["resolved"] == 2


def test_run_prints_each_step_unless_quiet(tmp_path):
    cmd = [sys.executable, "-m", "sweagent_oec.cli", "run", "-c", "config/replay_tinycalc.yaml", "--bundled"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    loud = subprocess.run(cmd + ["-o", str(tmp_path / "a")], capture_output=True, text=True, cwd=root, check=True)
    assert "[agent 0] grep -n 'def mean'" in loud.stdout and "-> 2.0" in loud.stdout
    quiet = subprocess.run(cmd + ["-o", str(tmp_path / "b"), "--quiet"], capture_output=True, text=True, cwd=root, check=True)
    assert "[agent" not in quiet.stdout and "exit status: submitted" in quiet.stdout
