import pytest

from sweagent_oec.data.actions import FormatError, parse_action, render_action
from sweagent_oec.tools.specs import Action, from_command_line, to_command_line

ACTIONS = [
    Action("bash", {"command": "grep -rn 'def mean' . | head -5"}),
    Action("str_replace_editor", {"command": "view", "path": "/testbed/calc.py", "view_range": [1, -1]}),
    Action("str_replace_editor", {"command": "str_replace", "path": "/testbed/a b.py",
                                  "old_str": "x = 'a'\n    y = \"b\"", "new_str": "x = 1\n\n    # é ünïcode\n"}),
    Action("str_replace_editor", {"command": "insert", "path": "/t/f.py", "insert_line": 3, "new_str": "pass"}),
    Action("submit", {}),
]


@pytest.mark.parametrize("style", ["xml", "tool", "ticks"])
@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.name + str(a.arguments.get("command", ""))[:8])
def test_render_then_parse_round_trips(style, action):
    message = render_action(style, "I will look.", action)
    thought, parsed = parse_action(style, message["content"], message.get("tool_calls"))
    assert parsed == action
    assert thought == "I will look."


@pytest.mark.parametrize("action", ACTIONS[1:4])
def test_command_line_round_trips(action):
    assert from_command_line(to_command_line(action)) == action


@pytest.mark.parametrize(
    "style, content, tool_calls, message",
    [
        ("xml", "no call here", None, "exactly one function call"),
        ("xml", "<function=bash><parameter=command>ls</parameter></function><function=submit></function>", None, "found 2"),
        ("xml", "<function=rm_rf></function>", None, "Unknown function"),
        ("xml", "<function=bash></function>", None, "missing required parameter"),
        ("ticks", "I think, with no command", None, "fenced block"),
        ("tool", "text only", None, "exactly one tool call"),
        ("tool", "", [{"function": {"name": "bash", "arguments": "{not json"}}], "not valid JSON"),
    ],
)
def test_malformed_replies_are_format_errors(style, content, tool_calls, message):
    with pytest.raises(FormatError, match=message):
        parse_action(style, content, tool_calls)


def test_ticks_takes_the_last_block_and_plain_commands_are_bash():
    content = "First\n```\nls\n```\nthen\n```bash\ncat calc.py\n```\n"
    assert parse_action("ticks", content)[1] == Action("bash", {"command": "cat calc.py"})
