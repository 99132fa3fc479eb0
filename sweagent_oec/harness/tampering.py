"""What the harness does so that a patch cannot grade itself resolved (see README: threat model).

- `scan_patch`: before anything is applied, a patch that writes into `.git/`, adds a module that
  would shadow the test runner (`pytest.py`, `_pytest/`, `pluggy/`, `py.py`), touches Python's
  start-up files, or whose added code reaches into the runner (`_pytest`, `pluggy`, report hooks,
  another process's fds under /proc) is suspected of tampering.
- `guard_command`: a pytest test command rewritten to run under guard.py (the installed runner,
  results over a private pipe, a verdict line signed with a one-time nonce).
- `read_verdict`: the guard's verdict out of the command's output; lines that imitate it are forgery.
- `log_disagreements`: tests the printed log claims passed that the guard did not see pass.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from importlib import resources

from sweagent_oec.harness.grading import PASSING

GUARD_TAG = "@@OEC-GUARD@@"
_FILE_HEADER = re.compile(r"^diff --git a/(.+?) b/(.+)$", re.MULTILINE)
_RUNNER_NAMES = {"pytest.py", "_pytest.py", "pluggy.py", "py.py", "pytest", "_pytest", "pluggy"}
_STARTUP = re.compile(r"(^|/)(sitecustomize\.py|usercustomize\.py|[^/]+\.pth)$")
#: Added code that has no business in a fix: it reaches into the test runner or into the
#: harness's processes. (A repository that is itself a pytest plugin is exempt: see scan_patch.)
_REACHES_RUNNER = re.compile(
    r"\b_pytest\b|\bpluggy\b|\bpytest_runtest_\w+|\bpytest_report_\w+|\bpytest_collection_modifyitems\b"
    r"|\bhookwrapper\b|\bpytest_sessionfinish\b|\bpytest_terminal_summary\b|getppid\(\)[^\n]*fd|/proc/[^\n]*getppid"
    r"|/proc/\$PPID|\bTestReport\b")
#: Code that forges SWE-smith/SWE-bench's log markers.
_MARKERS = re.compile(r">>>>> (Start|End) Test Output|>>>>> Applied Patch|@@OEC-GUARD@@")


def guard_source() -> str:
    return (resources.files("sweagent_oec.harness") / "guard.py").read_text()


@dataclass
class PatchFile:
    path: str
    new: bool
    added: list[str] = field(default_factory=list)


def _files(patch: str) -> list[PatchFile]:
    files: list[PatchFile] = []
    current: PatchFile | None = None
    for line in patch.splitlines():
        header = _FILE_HEADER.match(line)
        if header:
            current = PatchFile(path=header.group(2), new=False)
            files.append(current)
        elif current is None:
            if line.startswith("+++ ") and not line.startswith("+++ /dev/null"):  # a plain unified diff
                current = PatchFile(path=line[4:].split("\t")[0].removeprefix("b/"), new=False)
                files.append(current)
        elif line.startswith("new file mode") or line == "--- /dev/null":
            current.new = True
        elif line.startswith("+") and not line.startswith("+++ "):
            current.added.append(line[1:])
    return files


def scan_patch(patch: str, spared: list[str], repo: str = "") -> list[str]:
    """Reasons to suspect the patch of tampering with the tests' runner or reporting ([] = none).

    `spared`: files the task's own bug patch touched (its fix may have to change them back).
    `repo`: the task's repository; when it is pytest or a pytest plugin, runner code is its own.
    """
    reasons: list[str] = []
    own_runner = any(word in repo.lower() for word in ("pytest", "pluggy"))
    for f in _files(patch or ""):
        parts = f.path.split("/")
        if ".git" in parts:
            reasons.append(f"the patch writes into git's own folder ({f.path})")
            continue
        if f.path in spared:
            continue
        if f.new and any(part in _RUNNER_NAMES for part in parts) and not own_runner:
            reasons.append(f"the patch adds {f.path}, which would shadow the test runner")
        if _STARTUP.search(f.path):
            reasons.append(f"the patch changes Python's start-up file {f.path}")
        for line in f.added:
            hit = (None if own_runner else _REACHES_RUNNER.search(line)) or _MARKERS.search(line)
            if hit:
                reasons.append(f"{f.path} reaches into the test runner or the harness ({hit.group(0)!r})")
                break
    return reasons


def changed_files(patch: str) -> list[str]:
    return [f.path for f in _files(patch or "")]


def guard_command(test_cmd: str, guard_path: str, nonce_path: str, changed: list[str]) -> str | None:
    """`test_cmd` with its pytest replaced by the guard; None when it is not a plain pytest command.

    `pytest ARGS`, `py.test ARGS`, `python[3] -m pytest ARGS` (then the current folder goes on
    sys.path, as with -m), each optionally after a launcher prefix (`uv run`, `/x/bin/...`).
    """
    try:
        tokens = shlex.split(test_cmd)
    except ValueError:
        return None
    if any(t in {"&&", "||", ";", "|", "&", ">", "<"} or t.startswith(("$", "`")) for t in tokens):
        return None
    cwd_on_path, start = False, None
    for i, token in enumerate(tokens):
        name = token.rsplit("/", 1)[-1]
        if name in ("pytest", "py.test"):
            start, python, rest = i, "python", tokens[i + 1:]
            break
        if re.fullmatch(r"python(3(\.\d+)?)?", name) and tokens[i + 1:i + 3] == ["-m", "pytest"]:
            start, python, rest, cwd_on_path = i, token, tokens[i + 3:], True
            break
        if "=" in token and i == 0:
            return None  # VAR=value prefixes: the shell's business, not ours
    if start is None:
        return None
    flags = (["--cwd-on-path"] if cwd_on_path else []) + [x for path in changed for x in ("--changed", path)]
    words = " ".join(shlex.quote(w) for w in [*tokens[:start], python, "-I", guard_path, nonce_path, *flags, "--", *rest])
    if python == "python" and start == 0 and tokens[0].rsplit("/", 1)[-1] in ("pytest", "py.test"):
        # A bare `pytest`: the Python its script's #! names (a venv's or conda's; not a shim's shell),
        # else python, else python3.
        script = shlex.quote(tokens[start])
        words = (f'__oec_py=$(sed -n "1{{/python/s/^#!//p}}" "$(command -v {script})" 2>/dev/null); '
                 f'__oec_py=${{__oec_py:-$(command -v python || command -v python3)}}; $__oec_py' + words[len("python"):])
    return words


@dataclass
class Verdict:
    complete: bool
    incomplete: list[str]
    tampering: list[str]
    statuses: dict[str, str]
    returncode: int | None
    started: bool


def read_verdict(output: str, nonce: str) -> tuple[Verdict | None, list[str], str]:
    """(the guard's verdict or None, forgery reasons, the output without the verdict line)."""
    verdict, forged, kept = None, [], []
    for line in output.splitlines(keepends=True):
        stripped = line.strip()
        if GUARD_TAG not in stripped:
            kept.append(line)
            continue
        head = f"{GUARD_TAG} {nonce} "
        if stripped.startswith(head) and verdict is None:
            try:
                data = json.loads(stripped[len(head):])
                verdict = Verdict(complete=bool(data["complete"]), incomplete=list(data["incomplete"]),
                                  tampering=list(data["tampering"]), statuses=dict(data["statuses"]),
                                  returncode=data.get("returncode"), started=data.get("runner") is not None)
            except (ValueError, KeyError, TypeError):
                forged.append("an unreadable guard verdict")
        else:
            forged.append("a line in the test output imitates the guard's verdict")
            kept.append(line)
    return verdict, forged, "".join(kept)


def log_disagreements(log_statuses: dict[str, str], verdict_statuses: dict[str, str], tests: list[str]) -> list[str]:
    """Listed tests that the printed log says passed and the guard did not see pass."""
    out = []
    for test in tests:
        claimed, seen = log_statuses.get(test), verdict_statuses.get(test)
        if claimed in PASSING and seen not in PASSING:
            out.append(f"the log says {test} {claimed}, the guard saw {seen or 'no result'}")
    return out[:5]
