"""Deterministic rules for failures that need no judge; settings come from the taxonomy file.

Each rule looks only at the trajectory, so its verdict is free, instant and reproducible; the
output marks it `source: prerule` so it is never confused with a judge answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from failure_categorization.exit_status import base_status
from failure_categorization.taxonomy import Prerules
from sweagent_oec.data.trajectory import Trajectory
from sweagent_oec.tasks.instances import diff_paths


@dataclass
class PreruleHit:
    rule: str
    category: str
    rationale: str


def _normalized(action: str) -> str:
    return " ".join(action.split())


def _is_listing(action: str, commands: list[str]) -> bool:
    words = _normalized(action)
    return any(words == c or words.startswith(c + " ") for c in commands)


def context_overflow_from_listing(traj: Trajectory, rules: Prerules) -> PreruleHit | None:
    rule = rules.context_overflow_from_listing
    if not rule.enabled or base_status(traj.info.exit_status) != "exit_context":
        return None
    for step in reversed(traj.trajectory[-rule.window :]):
        if len(step.observation) >= rule.min_chars and _is_listing(step.action, rule.commands):
            return PreruleHit(
                "context_overflow_from_listing",
                rule.category,
                f"context limit hit right after `{_normalized(step.action)[:80]}` printed "
                f"{len(step.observation)} characters",
            )
    return None


def infinite_loop(traj: Trajectory, rules: Prerules) -> PreruleHit | None:
    rule = rules.infinite_loop
    actions = [_normalized(s.action) for s in traj.trajectory if s.action.strip()]
    if not rule.enabled or len(actions) < rule.repeats:
        return None
    tail = actions[-rule.repeats :]
    if len(set(tail)) != 1:
        return None
    return PreruleHit("infinite_loop", rule.category, f"the last {rule.repeats} actions are all `{tail[0][:80]}`")


# Python's report of a file that does not parse (pytest prefixes the lines with "E   ").
SYNTAX_ERROR = re.compile(r'File "([^"\n]+\.py)", line (\d+)(?:[^\n]*\n){1,4}?[^\n]*?\b(SyntaxError|IndentationError|TabError): ([^\n]*)')


def _mentions(action: str, path: str) -> bool:
    name = re.escape(path.rsplit("/", 1)[-1])
    return re.search(rf"(?<![\w.-]){name}(?!\w)", action) is not None


def syntax_error(traj: Trajectory, rules: Prerules) -> PreruleHit | None:
    rule = rules.syntax_error
    patched = diff_paths(traj.info.submission or "")
    if not rule.enabled or not patched:
        return None
    steps = traj.trajectory
    for i in range(len(steps) - 1, -1, -1):
        found = list(SYNTAX_ERROR.finditer(steps[i].observation))
        if not found:
            continue
        where, line, kind, message = found[-1].groups()
        target = next((p for p in patched if where == p or where.endswith("/" + p)), None)
        if target is None or any(_mentions(s.action, target) for s in steps[i + 1 :]):
            return None  # the latest syntax error is elsewhere or was worked on: the judge decides
        return PreruleHit("syntax_error", rule.category,
                          f"step {i + 1} showed {kind} in {target} line {line} ({message.strip()[:80]}); "
                          "no later action touched the file, and the patch changes it")
    return None


_QUIET_REDIRECTS = re.compile(r"\d*>\s*/dev/null|\d*>&\d")


def _only_reads(action: str, commands: list[str]) -> bool:
    parts = [p.strip() for p in re.split(r"&&|\|\||[;|\n]", _QUIET_REDIRECTS.sub(" ", action))]
    parts = [p for p in parts if p and not _is_listing(p, ["cd"])]
    return bool(parts) and all(">" not in p and _is_listing(p, commands) for p in parts)


def endless_file_reading(traj: Trajectory, rules: Prerules) -> PreruleHit | None:
    rule = rules.endless_file_reading
    if not rule.enabled or (traj.info.submission or "").strip() or base_status(traj.info.exit_status) not in rule.exit_statuses:
        return None
    actions = [s.action for s in traj.trajectory if s.action.strip()]
    reads = sum(_only_reads(a, rule.commands) for a in actions)
    if len(actions) < rule.min_actions or reads < rule.read_share * len(actions):
        return None
    return PreruleHit("endless_file_reading", rule.category,
                      f"{reads} of {len(actions)} actions only read files, no patch, and the run ended on {base_status(traj.info.exit_status)}")


def exit_status(traj: Trajectory, rules: Prerules) -> PreruleHit | None:
    rule = rules.exit_status
    status = base_status(traj.info.exit_status)
    if not rule.enabled or status not in rule.map:
        return None
    return PreruleHit("exit_status", rule.map[status], f"exit status {traj.info.exit_status} maps to {rule.map[status]}")


#: Tried in this order; the first hit wins (the most specific evidence first).
RULES = (context_overflow_from_listing, infinite_loop, syntax_error, endless_file_reading, exit_status)


def apply_prerules(traj: Trajectory, rules: Prerules) -> PreruleHit | None:
    for rule in RULES:
        hit = rule(traj, rules)
        if hit:
            return hit
    return None
