"""What the judge reads: the taxonomy or rubric, and one trajectory condensed to fit a prompt.

A case (default protocol) shows the exit status with its meaning, the start of the problem statement, a one-line
outline of every action, the last N actions with clipped observations, the agent's tools, the
gold fix (when an instances file is given) and the model patch. Sizes are in `InputConfig`.
The paper's protocol (`render_case_paper`) shows less: see the constants below.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from failure_categorization.exit_status import describe
from failure_categorization.taxonomy import Taxonomy
from sweagent_oec.data.trajectory import Trajectory
from sweagent_oec.tasks.instances import Instance
from sweagent_oec.tools.specs import TOOL_SPECS, tool_docs

#: Bumped when the prompt text changes, so cached answers to the old prompt are not reused.
PROMPT_VERSION = 1


class InputConfig(BaseModel):
    last_actions: int = Field(10, ge=1)
    max_observation_chars: int = Field(1500, ge=50)
    max_action_chars: int = Field(1000, ge=50)
    max_thought_chars: int = Field(500, ge=0)
    max_problem_chars: int = Field(3000, ge=100)
    max_patch_chars: int = Field(4000, ge=100)
    max_outline_chars: int = Field(6000, ge=200)
    tools: list[str] = Field(default_factory=lambda: list(TOOL_SPECS))


def clip(text: str, limit: int, keep: str = "both") -> str:
    """At most about `limit` characters; says how much was cut so the judge knows it is partial."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if keep == "head":
        return f"{text[:limit]}\n[... {cut} more characters clipped ...]"
    half = limit // 2
    return f"{text[:half]}\n[... {cut} characters clipped ...]\n{text[len(text) - (limit - half):]}"


def gold_fix(instance: Instance | None) -> str:
    """The reference fix: SWE-bench's gold patch as it is; for SWE-smith tasks the bug patch reversed."""
    if instance is None:
        return ""
    if instance.is_swebench:
        return getattr(instance, "gold_patch", "") or ""
    return reverse_patch(instance.patch) if instance.patch else ""


def reverse_patch(patch: str) -> str:
    """The inverse of a unified diff: SWE-smith's `patch` introduces the bug, its reverse is the fix.

    Header pairs and hunk ranges are swapped; within each run of changed lines removals are
    written before additions, as diff tools do, so the result reads like an ordinary fix.
    """
    out: list[str] = []
    minus: list[str] = []
    plus: list[str] = []

    def flush() -> None:
        out.extend(minus)
        out.extend(plus)
        minus.clear()
        plus.clear()

    lines = patch.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            flush()
            old, new = line[4:], lines[i + 1][4:]
            out += ["--- " + re.sub(r"^b/", "a/", new), "+++ " + re.sub(r"^a/", "b/", old)]
            i += 2
            continue
        if line.startswith("@@"):
            flush()
            line = re.sub(r"^@@ -(\S+) \+(\S+) @@", lambda m: f"@@ -{m[2]} +{m[1]} @@", line)
        elif line.startswith("+"):
            minus.append("-" + line[1:])
            i += 1
            continue
        elif line.startswith("-"):
            plus.append("+" + line[1:])
            i += 1
            continue
        else:
            flush()
            if line.startswith("new file mode"):
                line = "deleted" + line[len("new") :]
            elif line.startswith("deleted file mode"):
                line = "new" + line[len("deleted") :]
            elif m := re.match(r"^index (\w+)\.\.(\w+)(.*)$", line):
                line = f"index {m[2]}..{m[1]}{m[3]}"
        out.append(line)
        i += 1
    flush()
    return "\n".join(out) + ("\n" if patch.endswith("\n") else "")


def _text(content: object) -> str:
    """History content is a string or a list of OpenAI content parts."""
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def problem_statement(traj: Trajectory, instance: Instance | None) -> str:
    if instance is not None and instance.problem_statement:
        return instance.problem_statement
    first_user = next((h for h in traj.history if h.role == "user"), None)
    return _text(first_user.content) if first_user else ""


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def render_case(traj: Trajectory, instance: Instance | None, cfg: InputConfig) -> str:
    steps = traj.trajectory
    parts = [
        f"## Exit status\n{describe(traj.info.exit_status)}",
        f"## Problem statement (start)\n{clip(problem_statement(traj, instance), cfg.max_problem_chars, 'head')}",
        f"## Tools the agent had\n{tool_docs(cfg.tools)}",
    ]
    outline = "\n".join(
        f"{i}.{' [' + s.model_role + ']' if s.model_role else ''} {_one_line(s.action) or '(no action)'}"
        for i, s in enumerate(steps, 1)
    )
    parts.append(f"## Outline: all {len(steps)} actions, one line each\n{clip(outline, cfg.max_outline_chars) or '(none)'}")
    first = max(0, len(steps) - cfg.last_actions)
    detail = []
    for i, step in enumerate(steps[first:], first + 1):
        who = f" ({step.model_role}: {step.model_name})" if step.model_role else ""
        block = [f"### Step {i} of {len(steps)}{who}"]
        if step.thought.strip() and cfg.max_thought_chars:
            block.append(f"Thought: {clip(step.thought.strip(), cfg.max_thought_chars)}")
        block.append(f"Action:\n{clip(step.action, cfg.max_action_chars)}")
        block.append(f"Observation:\n{clip(step.observation, cfg.max_observation_chars)}")
        detail.append("\n".join(block))
    parts.append(f"## The last {len(detail)} actions in full\n" + ("\n\n".join(detail) or "(the agent took no action)"))
    if gold := gold_fix(instance):
        parts.append(f"## Gold patch (the reference fix)\n{clip(gold, cfg.max_patch_chars, 'head')}")
    submission = traj.info.submission or ""
    parts.append(f"## Model patch (what the agent submitted)\n{clip(submission, cfg.max_patch_chars, 'head') if submission.strip() else '(empty: no patch)'}")
    return "\n\n".join(parts)


def failure_system_prompt(taxonomy: Taxonomy) -> str:
    categories = "\n".join(f"- {c.name}: {c.description}" for c in taxonomy.categories)
    return (
        "You review runs of an AI software-engineering agent that tried to fix an issue in a repository "
        "and FAILED: its patch did not make the tests pass (or it submitted none). Decide the main "
        "reason it failed, choosing exactly one category:\n"
        f"{categories}\n\n"
        "Answer with one JSON object and nothing else:\n"
        '{"category": "<one category name from the list>", "rationale": "<at most two sentences>", '
        '"confidence": <a number from 0 to 1>}'
    )


def rubric_system_prompt(taxonomy: Taxonomy) -> str:
    scale = taxonomy.rubric.scale
    lines = []
    for c in taxonomy.rubric.criteria:
        anchors = "; ".join(f"{k} = {v}" for k, v in sorted(c.anchors.items()))
        lines.append(f"- {c.name}: {c.description}" + (f" ({anchors})" if anchors else ""))
    example = ", ".join(f'"{c.name}": <{scale.min}-{scale.max}>' for c in taxonomy.rubric.criteria)
    return (
        "You review runs of an AI software-engineering agent that submitted a patch for an issue in a "
        f"repository. Score the run on each criterion, with an integer from {scale.min} (worst) to "
        f"{scale.max} (best):\n" + "\n".join(lines) + "\n\n"
        "Answer with one JSON object and nothing else:\n"
        f'{{"scores": {{{example}}}, "rationale": "<at most two sentences>", "confidence": <a number from 0 to 1>}}'
    )


def build_messages(traj: Trajectory, instance: Instance | None, taxonomy: Taxonomy, mode: str, cfg: InputConfig) -> list[dict]:
    system = rubric_system_prompt(taxonomy) if mode == "submitted" else failure_system_prompt(taxonomy)
    return [{"role": "system", "content": system}, {"role": "user", "content": render_case(traj, instance, cfg)}]


# --- the paper's protocol ----------------------------------------------------------------------
#: What the paper's judge sees: the task's first 1000 characters, the last 20 actions in full and
#: the last 20 observations cut to their first 200 characters (a plain cut, no marker).
PAPER_TASK_CHARS = 1000
PAPER_LAST_STEPS = 20
PAPER_OBSERVATION_CHARS = 200


def paper_system_prompt(taxonomy: Taxonomy) -> str:
    categories = "\n".join(f"- {c.name}: {c.description}" for c in taxonomy.categories)
    return (
        "You are shown the end of a run in which an AI software-engineering agent tried to resolve a task "
        "in a repository and did not succeed. Work out why it failed. The possible failure categories are:\n"
        f"{categories}\n\n"
        "Describe in your own words what went wrong. Then write the name of the single category that fits "
        "best, exactly as listed, alone on the last line of your answer."
    )


def render_case_paper(traj: Trajectory, instance: Instance | None, tools: list[str]) -> str:
    steps = traj.trajectory
    first = max(0, len(steps) - PAPER_LAST_STEPS)
    tail = list(enumerate(steps[first:], first + 1))
    actions = "\n".join(f"{i}. {s.action}" for i, s in tail) or "(none)"
    observations = "\n".join(f"{i}. {s.observation[:PAPER_OBSERVATION_CHARS]}" for i, s in tail) or "(none)"
    return "\n\n".join([
        f"## Exit status\n{describe(traj.info.exit_status)}",
        f"## Tools the agent had\n{tool_docs(tools)}",
        f"## Task (first {PAPER_TASK_CHARS} characters)\n{problem_statement(traj, instance)[:PAPER_TASK_CHARS]}",
        f"## The last {len(tail)} actions\n{actions}",
        f"## The last {len(tail)} observations (each cut to {PAPER_OBSERVATION_CHARS} characters)\n{observations}",
    ])


def build_messages_paper(traj: Trajectory, instance: Instance | None, taxonomy: Taxonomy, tools: list[str]) -> list[dict]:
    return [{"role": "system", "content": paper_system_prompt(taxonomy)},
            {"role": "user", "content": render_case_paper(traj, instance, tools)}]
