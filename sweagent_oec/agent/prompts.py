"""Rendering the conversation's messages from templates (jinja2), for one actor's settings."""

from __future__ import annotations

from functools import lru_cache

import jinja2

from sweagent_oec.data.actions import canonical_style
from sweagent_oec.config import TemplateConfig
from sweagent_oec.tools.specs import tool_docs

CALL_FORMATS = {
    "xml_function_calling": "<function=example_function_name>\n<parameter=example_parameter_1>value_1</parameter>\n"
    "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
    "</parameter>\n</function>\n\n<IMPORTANT>\nReminder:\n- Function calls MUST follow the specified format\n"
    "- Required parameters MUST be specified\n- Only call one function at a time\n</IMPORTANT>",
    "thought_action": "A short discussion of what you will do next, then exactly ONE command in a fenced block:\n"
    "DISCUSSION\nFirst I'll look at the files in the repository.\n\n```\nls -a\n```\n"
    "Tools other than bash are called as commands, e.g. `str_replace_editor view /path/to/file`.",
    "function_calling": "",
}

_env = jinja2.Environment(keep_trailing_newline=True, autoescape=False)


@lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    return _env.from_string(source)


def render(source: str, **variables) -> str:
    return _compile(source).render(**variables)


def system_message(templates: TemplateConfig, style: str, tools: list[str], **variables) -> str:
    style = canonical_style(style)
    docs = "" if style == "function_calling" else tool_docs(tools)
    return render(templates.system_template, tool_docs=docs, call_format=CALL_FORMATS[style], **variables)


def observation_message(templates: TemplateConfig, output: str) -> str:
    """The text the model reads after an action, from the command's raw output."""
    limit = templates.max_observation_length
    if not output.strip():
        return render(templates.next_step_no_output_template, observation=output)
    if len(output) > limit:
        return render(templates.next_step_truncated_observation_template, observation=output,
                      max_observation_length=limit, elided_chars=len(output) - limit)
    return render(templates.next_step_template, observation=output)
