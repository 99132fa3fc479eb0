"""Action formats: read a model's reply into (thought, Action), and write one back in any style.

Three styles, named as in SWE-agent's `parse_function.type` and SWE-smith's SFT styles:
  function_calling     / tool  : native OpenAI `tool_calls`, exactly one per turn
  xml_function_calling / xml   : <function=NAME><parameter=K>V</parameter></function>
  thought_action       / ticks : a thought, then the command in the last fenced block
Rendering is the inverse of parsing, so the expert takeover and SFT export can move a turn from
one style to another (`parse(render(a)) == a`).
"""

from __future__ import annotations

import json
import re
import uuid

from sweagent_oec.tools.specs import TOOL_SPECS, Action, from_command_line, to_command_line

STYLE_ALIASES = {
    "function_calling": "function_calling",
    "tool": "function_calling",
    "xml_function_calling": "xml_function_calling",
    "xml": "xml_function_calling",
    "thought_action": "thought_action",
    "ticks": "thought_action",
}


class FormatError(Exception):
    """The reply holds no single well-formed action; the message is shown to the model."""


def canonical_style(style: str) -> str:
    try:
        return STYLE_ALIASES[style]
    except KeyError:
        raise ValueError(f"unknown action style {style!r}; use one of {sorted(STYLE_ALIASES)}") from None


# ---------------------------------------------------------------- parsing

_XML_FUNCTION = re.compile(r"<function=([\w.-]+)>(.*?)</function>", re.S)
_XML_PARAM = re.compile(r"<parameter=([\w.-]+)>(.*?)</parameter>", re.S)
_FENCE = re.compile(r"^```[\w-]*[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def _check_args(action: Action) -> Action:
    spec = TOOL_SPECS.get(action.name)
    if spec is None:
        raise FormatError(f"Unknown function '{action.name}'. Available: {', '.join(TOOL_SPECS)}.")
    missing = [p for p in spec["parameters"]["required"] if p not in action.arguments]
    if missing:
        raise FormatError(f"Function '{action.name}' is missing required parameter(s): {', '.join(missing)}.")
    props = spec["parameters"]["properties"]
    unknown = [p for p in action.arguments if p not in props]
    if unknown:
        raise FormatError(f"Function '{action.name}' has no parameter(s): {', '.join(unknown)}.")
    return action


def _coerce(name: str, key: str, value: str):
    """XML parameters are text; give integers and arrays their JSON type."""
    kind = TOOL_SPECS.get(name, {}).get("parameters", {}).get("properties", {}).get(key, {}).get("type")
    if kind in ("integer", "array"):
        try:
            return json.loads(value)
        except ValueError:
            raise FormatError(f"Parameter '{key}' of '{name}' must be {kind}, got {value!r}.") from None
    return value


def parse_xml(content: str) -> tuple[str, Action]:
    calls = _XML_FUNCTION.findall(content)
    if len(calls) != 1:
        raise FormatError(
            f"Your reply must contain exactly one function call in the form "
            f"<function=NAME><parameter=KEY>VALUE</parameter></function>; found {len(calls)}."
        )
    name, body = calls[0]
    args = {}
    for key, value in _XML_PARAM.findall(body):
        # Models put the value on its own lines; one leading and trailing newline is layout.
        value = value[1:] if value.startswith("\n") else value
        value = value[:-1] if value.endswith("\n") else value
        args[key] = _coerce(name, key, value)
    thought = content[: content.index("<function=")].strip()
    return thought, _check_args(Action(name, args))


def parse_ticks(content: str) -> tuple[str, Action]:
    blocks = list(_FENCE.finditer(content))
    if not blocks:
        raise FormatError("Your reply must end with exactly one command in a fenced block (```...```).")
    last = blocks[-1]
    command = last.group(1).rstrip("\n")
    if not command.strip():
        raise FormatError("The fenced block is empty: put exactly one command in it.")
    return content[: last.start()].strip(), from_command_line(command)


def parse_tool_calls(content: str | None, tool_calls: list[dict] | None) -> tuple[str, Action]:
    if not tool_calls or len(tool_calls) != 1:
        raise FormatError(f"Your reply must contain exactly one tool call; found {len(tool_calls or [])}.")
    fn = tool_calls[0].get("function", {})
    raw = fn.get("arguments") or "{}"
    try:
        args = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except ValueError:
        raise FormatError(f"The arguments of tool call '{fn.get('name')}' are not valid JSON.") from None
    if not isinstance(args, dict):
        raise FormatError("Tool call arguments must be a JSON object.")
    return (content or "").strip(), _check_args(Action(fn.get("name", ""), args))


def parse_action(style: str, content: str | None, tool_calls: list[dict] | None = None) -> tuple[str, Action]:
    """(thought, action) from a model reply, or FormatError with a message for the model."""
    style = canonical_style(style)
    if style == "function_calling":
        return parse_tool_calls(content, tool_calls)
    if style == "xml_function_calling":
        return parse_xml(content or "")
    return parse_ticks(content or "")


# ---------------------------------------------------------------- rendering


def new_tool_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _xml_value(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    # Multi-line values go on their own lines; parse_xml strips exactly that layout back off.
    return f"\n{text}\n" if "\n" in text else text


def render_xml(thought: str, action: Action) -> str:
    params = "".join(f"<parameter={k}>{_xml_value(v)}</parameter>\n" for k, v in action.arguments.items())
    call = f"<function={action.name}>\n{params}</function>"
    return f"{thought}\n\n{call}" if thought else call


def render_ticks(thought: str, action: Action) -> str:
    block = f"```\n{to_command_line(action)}\n```"
    return f"{thought}\n\n{block}" if thought else block


def render_action(style: str, thought: str, action: Action, call_id: str | None = None) -> dict:
    """An assistant message (OpenAI shape) holding `action` in `style`."""
    style = canonical_style(style)
    if style == "function_calling":
        call = {
            "id": call_id or new_tool_call_id(),
            "type": "function",
            "function": {"name": action.name, "arguments": json.dumps(action.arguments)},
        }
        return {"role": "assistant", "content": thought, "tool_calls": [call]}
    text = render_xml(thought, action) if style == "xml_function_calling" else render_ticks(thought, action)
    return {"role": "assistant", "content": text}
