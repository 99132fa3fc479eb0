"""One CLI vocabulary: every command's --help, walked and checked for the shared spellings."""

import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from sweagent_oec.cli import app

COMMANDS = [[name] for name in ("run", "run-batch", "merge-preds", "eval", "score", "convert", "train", "rounds", "shift",
                                "categorize", "view", "serve-student", "summary")]
COMMANDS += [["tasks", "synth"], ["tasks", "embedded"], ["images", "pull"]]
#: Options whose values are a fixed set: the parser shows and checks the choices.
CHOICES = ("--runtime", "--grading", "--harness", "--executor", "--protocol", "--text", "--style", "--truncation",
           "--response-format")
#: Where `-o` names a file, not a folder (merge-preds writes one preds.json).
OUTPUT_FILE = {("merge-preds",)}


def help_text(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=250, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def option_line(text: str, option: str) -> str | None:
    """The help line that declares `option` (not one whose description mentions it)."""
    for line in text.splitlines():
        if re.match(rf"^[\s│*]*{re.escape(option)}(\s|$)", line):
            return line
    return None


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_speaks_the_shared_vocabulary(path):
    text = help_text(path)
    for long, short in (("--output-dir", "-o"), ("--instances", "-i"), ("--workers", "-w"), ("--config", "-c")):
        line = option_line(text, long)
        if line is not None:
            assert re.search(rf"\s{short}\s", line), f"{' '.join(path)}: {long} without {short}"
    for retired in ("--out", "--num-workers"):
        assert option_line(text, retired) is None, f"{' '.join(path)} still shows {retired}"
    if tuple(path) not in OUTPUT_FILE:
        assert option_line(text, "--output") is None, f"{' '.join(path)}: an output folder is -o/--output-dir"
    seed = option_line(text, "--seed")
    if seed is not None:
        assert "[default: 42]" in seed or "default: 42" in seed, f"{' '.join(path)}: --seed's default is not 42"
    for choice in CHOICES:
        line = option_line(text, choice)
        if line is not None:
            assert re.search(r"<[\w-]+(\|[\w-]+)+", line), f"{' '.join(path)}: {choice} does not list its choices"


def test_help_lists_the_commands_in_pipeline_order_and_there_is_a_version():
    text = help_text([])
    order = [name for name in ("run", "run-batch", "eval", "convert", "train", "rounds", "shift", "categorize", "view")
             if re.search(rf"│ {re.escape(name)}\s", text)]
    positions = [re.search(rf"│ {re.escape(name)}\s", text).start() for name in order]
    assert positions == sorted(positions) and len(order) == 9
    out = subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and re.fullmatch(r"sweagent-oec \d+\.\d+\.\d+\n", out.stdout)


def test_a_bad_choice_or_option_is_one_line_and_old_spellings_still_work(tmp_path):
    cli = [sys.executable, "-m", "sweagent_oec.cli"]
    bad = subprocess.run(cli + ["eval", "-i", "x", "--run-id", "r", "--runtime", "podman"], capture_output=True, text=True)
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "--runtime" in lines[0] and "'local', 'docker'" in lines[0]
    unknown = subprocess.run(cli + ["run-batch", "--bogus"], capture_output=True, text=True)
    assert unknown.returncode == 2 and [line for line in unknown.stderr.splitlines() if line.strip()] == [
        "error: No such option: --bogus (see: sweagent-oec run-batch --help)"]
    old = subprocess.run(cli + ["run-batch", "-c", "config/replay_tinycalc.yaml", "-i", str(tmp_path / "none.jsonl"),
                                "--num-workers", "2"], capture_output=True, text=True)
    assert "--num-workers is deprecated" in old.stderr or "none.jsonl" in old.stderr  # accepted, not "No such option"
    assert "No such option" not in old.stderr


NO_PYDANTIC = """
import atexit, sys
atexit.register(lambda: print("PYDANTIC", "pydantic" in sys.modules))
from sweagent_oec.cli import main
sys.argv = ["sweagent-oec", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("args", [["--version"], ["convert", "--help"], ["convert", "x", "--workers", "many"]], ids=" ".join)
def test_parsing_options_imports_no_pydantic(args):
    """typer 0.29 parses every option through pydantic TypeAdapters (~12 MiB, ~0.1 s before a command
    starts; issue 20): the parser must stay on typer's own click. pydantic is for the config models."""
    out = subprocess.run([sys.executable, "-c", NO_PYDANTIC, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode in (0, 2) and out.stdout.splitlines()[-1] == "PYDANTIC False", out.stdout + out.stderr
