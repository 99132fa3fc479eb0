"""Tool specs: names, parameters, docs, and the command line each call becomes in the session.

The tools themselves run inside the runtime (`tools/bin/`), so they behave the same locally and
in Docker. A model's tool call {name, arguments} is turned into one bash command line here, the
way SWE-agent does it; `from_command_line` reads such a line back (for `thought_action` models).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

TOOL_SPECS: dict[str, dict] = {
    "bash": {
        "description": "Run a bash command in the repository's terminal. State (cwd, exported variables) "
        "persists between calls. Interactive programs (vim, less, a bare python REPL) are not available.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The bash command to run."}},
            "required": ["command"],
        },
    },
    "str_replace_editor": {
        "description": "Custom editing tool for viewing, creating and editing files.\n"
        "* `view` shows a file with line numbers (`cat -n`), or lists a directory two levels deep\n"
        "* `create` writes a new file; it refuses a path that already exists\n"
        "* `str_replace` replaces `old_str`, which must occur exactly once, with `new_str`\n"
        "* `insert` inserts `new_str` after line `insert_line`\n"
        "* `undo_edit` reverts the last edit made to the file\n"
        "Long outputs are clipped and marked with <response clipped>.",
        "parameters": {
            "type": "object",
            "properties": {
                "command": {
                    "type": "string",
                    "enum": ["view", "create", "str_replace", "insert", "undo_edit"],
                    "description": "The command to run.",
                },
                "path": {"type": "string", "description": "Absolute path to a file or directory."},
                "file_text": {"type": "string", "description": "Content of the file to `create`."},
                "old_str": {"type": "string", "description": "`str_replace`: the exact text to replace."},
                "new_str": {"type": "string", "description": "`str_replace`/`insert`: the new text."},
                "insert_line": {"type": "integer", "description": "`insert`: insert after this line."},
                "view_range": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "`view`: [start, end] lines (1-based, end -1 for the end of file).",
                },
            },
            "required": ["command", "path"],
        },
    },
    "submit": {
        "description": "Submit the current changes (the repository's diff) and end the task.",
        "parameters": {"type": "object", "properties": {}, "required": []},
    },
}

#: SWE-agent tool bundles (named by the last part of their path, e.g. `tools/edit_anthropic`) and the
#: tools each gives here. `registry` and `diff_state` add no tool: the registry's variables are read
#: from `registry_variables`, and the submission is always the repository's diff.
BUNDLES: dict[str, list[str]] = {
    "registry": [], "diff_state": [], "edit_anthropic": ["str_replace_editor"], "review_on_submit_m": ["submit"],
    "submit": ["submit"], "bash": ["bash"], "str_replace_editor": ["str_replace_editor"],
}
#: The bundle whose `submit` shows a review message (SUBMIT_REVIEW_MESSAGES) before it submits.
REVIEW_BUNDLE = "review_on_submit_m"

#: Parameter order on the command line: positional first, then flags.
_POSITIONAL = {"bash": ["command"], "str_replace_editor": ["command", "path"], "submit": []}


class UnknownToolError(ValueError):
    pass


@dataclass
class Action:
    """A tool call, independent of how the model wrote it."""

    name: str
    arguments: dict = field(default_factory=dict)


def bundle_key(bundle: str) -> str:
    """`tools/edit_anthropic/` -> `edit_anthropic`."""
    return bundle.rstrip("/").rsplit("/", 1)[-1]


def tool_names(bundles: list[str], enable_bash_tool: bool = True) -> list[str]:
    """Tool names from `bundles` (tool names or SWE-agent bundle paths); bash comes first unless
    `enable_bash_tool` is false (SWE-agent's key) and no bundle names it."""
    names: list[str] = ["bash"] if enable_bash_tool else []
    for bundle in bundles:
        key = bundle_key(bundle)
        if key not in BUNDLES:
            raise UnknownToolError(f"unknown tool bundle {bundle!r}; known: {sorted(BUNDLES)}")
        for name in BUNDLES[key]:
            if name not in names:
                names.append(name)
    return names


def check_tools(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in TOOL_SPECS]
    if unknown:
        raise UnknownToolError(f"unknown tool(s) {unknown}; known: {sorted(TOOL_SPECS)}")
    return names


def openai_tools(names: list[str]) -> list[dict]:
    """Tool definitions in the OpenAI `tools=[...]` shape."""
    return [{"type": "function", "function": {"name": n, **TOOL_SPECS[n]}} for n in check_tools(names)]


def tool_docs(names: list[str]) -> str:
    """Plain-text tool documentation for prompts of non-function-calling models (SWE-smith's layout)."""
    parts = []
    for i, name in enumerate(check_tools(names), 1):
        spec = TOOL_SPECS[name]
        lines = [f"---- BEGIN FUNCTION #{i}: {name} ----", f"Description: {spec['description']}", ""]
        props = spec["parameters"]["properties"]
        if props:
            lines.append("Parameters:")
            required = set(spec["parameters"]["required"])
            for j, (pname, p) in enumerate(props.items(), 1):
                kind = p["type"] + (f", one of {p['enum']}" if "enum" in p else "")
                req = "required" if pname in required else "optional"
                lines.append(f"  ({j}) {pname} ({kind}, {req}): {p['description']}")
        else:
            lines.append("No parameters are required for this function.")
        lines.append(f"---- END FUNCTION #{i} ----")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def to_command_line(action: Action) -> str:
    """The bash line that runs a tool call in the session."""
    if action.name == "bash":
        return str(action.arguments.get("command", ""))
    if action.name not in TOOL_SPECS:
        raise UnknownToolError(f"unknown tool {action.name!r}")
    args = dict(action.arguments)
    words = [action.name]
    for pname in _POSITIONAL[action.name]:
        if pname in args:
            words.append(shlex.quote(str(args.pop(pname))))
    for key, value in args.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        words.append(f"--{key}")
        words.extend(shlex.quote(str(v)) for v in values)
    return " ".join(words)


def from_command_line(line: str) -> Action:
    """Read a command line back into an Action: a known tool with its arguments, else bash."""
    stripped = line.strip()
    first = stripped.split(maxsplit=1)[0] if stripped else ""
    if first not in TOOL_SPECS or first == "bash":
        return Action("bash", {"command": line})
    try:
        words = shlex.split(stripped)
    except ValueError:
        return Action("bash", {"command": line})
    props = TOOL_SPECS[first]["parameters"]["properties"]
    positional = list(_POSITIONAL[first])
    args: dict = {}
    i = 1
    while i < len(words):
        word = words[i]
        if word.startswith("--") and word[2:] in props:
            key = word[2:]
            if props[key]["type"] == "array":
                values = []
                while i + 1 < len(words) and not words[i + 1].startswith("--"):
                    values.append(int(words[i + 1]) if words[i + 1].lstrip("-").isdigit() else words[i + 1])
                    i += 1
                args[key] = values
            else:
                i += 1
                value = words[i] if i < len(words) else ""
                args[key] = int(value) if props[key]["type"] == "integer" and value.lstrip("-").isdigit() else value
        elif positional:
            args[positional.pop(0)] = word
        else:
            return Action("bash", {"command": line})
        i += 1
    return Action(first, args)
