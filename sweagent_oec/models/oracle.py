"""The oracle expert: an offline stand-in for Claude/OpenAI with privileged access to the fix.

It knows the instance's reference fix (the reverse of the bug `patch`) and acts through the same
tools as any model, in the expert's action format, reading each observation as it comes:
go to the repo root and look at the state; undo earlier edits (the student's, which may conflict
with the fix: changed tracked files are restored and new files removed); view each file the fix touches; `str_replace` each hunk back
(falling back to `git apply -R` of the bug patch when the text was changed beyond recognition);
run the FAIL_TO_PASS tests; submit. Use it to exercise the whole OEC pipeline with no API key;
it is never the default where a real expert is configured.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from sweagent_oec.data.actions import render_action
from sweagent_oec.data.trajectory import ModelStats
from sweagent_oec.models.base import ModelReply
from sweagent_oec.tasks.instances import DIFF_HEADER, Instance
from sweagent_oec.tools.specs import Action

@dataclass
class Hunk:
    path: str
    first_line: int  # in the buggy file
    buggy: str
    fixed: str


def fix_hunks(bug_patch: str) -> list[Hunk]:
    """Each hunk of the bug patch, as (buggy text -> fixed text) in the buggy file."""
    hunks: list[Hunk] = []
    path, lines, start = None, None, 0

    def close():
        if path and lines:
            buggy = "\n".join(t[1:] for t in lines if t[:1] in (" ", "+"))
            fixed = "\n".join(t[1:] for t in lines if t[:1] in (" ", "-"))
            hunks.append(Hunk(path, start, buggy, fixed))

    for line in bug_patch.splitlines():
        if m := DIFF_HEADER.match(line):
            close()
            path, lines = m.group(2), None
        elif line.startswith("@@"):
            close()
            lines = []
            start = int(re.search(r"\+(\d+)", line).group(1))
        elif lines is not None and line[:1] in (" ", "+", "-") and not line.startswith(("+++", "---")):
            lines.append(line)
        elif lines is not None and line == "":
            lines.append(" ")  # a blank context line whose leading space was stripped
    close()
    return hunks


def _last_observation(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") in ("user", "tool"):
            content = message.get("content")
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content)
            return str(content or "")
    return ""


class OracleModel:
    name = "oracle"

    def __init__(self, instance: Instance, style: str = "function_calling"):
        self.instance, self.style = instance, style
        self.stats = ModelStats()
        self.hunks = fix_hunks(instance.patch)
        #: (thought, action, is_hunk_edit); made once the repo state has been seen.
        self.plan: list[tuple[str, Action, bool]] | None = None
        self.started = False
        self.next = 0

    def _make_plan(self, observation: str) -> list[tuple[str, Action, bool]]:
        lines = observation.strip().splitlines()
        root = next((line.strip() for line in lines if line.strip().startswith("/")), ".")
        plan: list[tuple[str, Action, bool]] = []
        if any(re.match(r"^[ MADRCU?!]{2} ", line) for line in lines[1:]):
            plan.append(("Earlier edits may conflict with the fix (a new file can even shadow a module): "
                         "restore the task's state first.",
                         Action("bash", {"command": "git checkout HEAD -- . && git clean -fdq && git status --short"}), False))
        for path in dict.fromkeys(h.path for h in self.hunks):
            first = min(h.first_line for h in self.hunks if h.path == path)
            plan.append((f"Look at {path} where the fix goes.",
                         Action("bash", {"command": f"nl -ba {shlex.quote(path)} | sed -n '{max(1, first - 5)},{first + 20}p'"}), False))
        for hunk in self.hunks:
            plan.append((f"Fix the code in {hunk.path}.",
                         Action("str_replace_editor", {"command": "str_replace", "path": f"{root}/{hunk.path}",
                                                       "old_str": hunk.buggy, "new_str": hunk.fixed}), True))
        tests = " ".join(shlex.quote(t) for t in self.instance.FAIL_TO_PASS[:20])
        if tests:
            plan.append(("Run the tests that failed before the fix.",
                         Action("bash", {"command": f"python -m pytest -q -p no:cacheprovider {tests} 2>&1 | tail -15"}), False))
        plan.append(("The fix is in and the tests pass: submit.", Action("submit", {}), False))
        return plan

    def _recover(self, observation: str) -> None:
        """A str_replace that did not apply (the text was changed beyond recognition): reverse the
        whole bug patch instead of the remaining hunk edits."""
        if not (self.next and self.plan[self.next - 1][2] and "No replacement was performed" in observation):
            return
        patch = self.instance.patch if self.instance.patch.endswith("\n") else self.instance.patch + "\n"
        rest = [item for item in self.plan[self.next:] if not item[2]]
        undo = ("That edit did not apply: reverse the faulty change as a whole.",
                Action("bash", {"command": f"git apply -R --whitespace=nowarn <<'OEC_EOF'\n{patch}OEC_EOF"}), False)
        self.plan[self.next:] = [undo, *rest]

    def query(self, messages: list[dict], tools: list[dict] | None = None) -> ModelReply:
        self.stats = self.stats.add(ModelStats(api_calls=1))
        if not self.started:
            self.started = True
            thought = "I know the fix for this task. First, go to the repository root and look at its state."
            action = Action("bash", {"command": 'cd "$(git rev-parse --show-toplevel)" && pwd && git status --short'})
        else:
            if self.plan is None:
                self.plan = self._make_plan(_last_observation(messages))
            else:
                self._recover(_last_observation(messages))
            thought, action, _ = self.plan[min(self.next, len(self.plan) - 1)]
            self.next += 1
        message = render_action(self.style, thought, action)
        return ModelReply(content=message["content"], tool_calls=message.get("tool_calls"))
