"""The `bash -n` check made in the agent's own session (agent/loop.bash_syntax_error).

It must agree with a plain `bash -n` (the host check it replaced), never run the command (whatever the
command does to get out of the check's quoting), leave the session as it was, and never pass off a check
that could not be made as a syntax error.
"""

from __future__ import annotations

import logging
import subprocess

import pytest

from sweagent_oec.agent.loop import ansi_c_quote, bash_syntax_error
from tests.runtime_kinds import RUNTIME_KINDS, runtime_factory  # noqa: F401  (fixture)

MARK = "/testbed/EXECUTED"

#: Commands that parse: each would leave MARK behind if any of it ran.
PARSING = [
    f"touch {MARK}",
    f"'; touch {MARK}; echo '",
    f"\"; touch {MARK}; echo \"",
    f"echo 'it'\\''s'; touch {MARK}",
    f"echo \\'; touch {MARK}",
    f"echo $(touch {MARK}) `touch {MARK}`",
    f"cat <<'EOF'\nEOF\ntouch {MARK}\nEOF",
    f"cat <<EOF\n$(touch {MARK})\nEOF",
    f"echo done\0; touch {MARK}",
    f"printf() {{ touch {MARK}; }}; printf x",
    f"exec > /dev/null; touch {MARK}",
    f"OEC_BASH_N_0000000000000000 0\ntouch {MARK}",
    f"echo $'\\x27'; touch {MARK} # ' \" ` $",
    f"set -n; touch {MARK}",
    f"kill -9 $$; touch {MARK}",
    f"echo é ü 日本 \x01\x7f; touch {MARK}",
]
#: Commands that do not parse: side effects before the error must not happen either.
NOT_PARSING = [
    f"touch {MARK}; if then fi",
    f"touch {MARK}; echo 'unclosed",
    f"touch {MARK}; echo (",
    f"touch {MARK}; echo hi; }}",
    f"touch {MARK}; a=(",
    f"touch {MARK}\necho $(",
    f"touch {MARK}; echo (\0",
    f"'; touch {MARK}; echo '; if then",
    f"echo '\\''; touch {MARK}",
    f")\n touch {MARK}\n(",  # would close the check's subshell, were it code
]


def host_bash_n(command: str) -> tuple[int, str]:
    """What a plain `bash -n` on the host says (the check this one replaced)."""
    result = subprocess.run(["bash", "--norc", "--noprofile", "-n"], input=command.replace("\0", ""), capture_output=True,
                            text=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    return result.returncode, result.stderr


def marked(runtime) -> bool:
    return runtime.run(f"test -e {MARK} && echo yes || echo no").output.strip() == "yes"


@pytest.mark.parametrize("kind", RUNTIME_KINDS)
def test_never_runs_the_command_and_agrees_with_plain_bash_n(runtime_factory, kind):
    runtime = runtime_factory(kind)
    runtime.run("cd /tmp")
    for command in PARSING + NOT_PARSING:
        error = bash_syntax_error(runtime, command)
        assert not marked(runtime), f"ran: {command!r}"
        rc, stderr = host_bash_n(command)
        assert (error is not None) == (rc != 0), command
        if error is not None:
            assert error == stderr and ("syntax error" in error or "unexpected EOF" in error), command
    # The session is where it was, and it runs commands as before.
    assert runtime.run("pwd").output.strip() == "/tmp"
    assert runtime.run(f"touch {MARK}").exit_code == 0 and marked(runtime)


def test_the_verdicts_are_the_expected_ones(runtime_factory):
    runtime = runtime_factory("local")
    assert [c for c in PARSING if bash_syntax_error(runtime, c) is not None] == []
    assert [c for c in NOT_PARSING if bash_syntax_error(runtime, c) is None] == []
    assert "unexpected token `then'" in bash_syntax_error(runtime, "if then fi")
    good_heredoc = "cat > /tmp/x.txt <<'EOF'\nif then ( unbalanced\nEOF\ncat /tmp/x.txt"
    assert bash_syntax_error(runtime, good_heredoc) is None
    assert not marked(runtime)


def test_the_agents_own_settings_do_not_change_the_verdict_or_survive_it(runtime_factory):
    """set -e/-u/-x/pipefail, functions shadowing what the check calls, a changed PATH and locale."""
    runtime = runtime_factory("local")
    setup = (f"set -eux -o pipefail; export PATH=/nonexistent LC_ALL=fr_FR.UTF-8 BASH_ENV=/tmp/env.sh; "
             f"printf() {{ builtin echo shadowed; }}; bash() {{ eval \"$(cat)\"; }}; command() {{ :; }}; "
             f"unset() {{ :; }}; builtin echo 'touch {MARK}' > /tmp/env.sh; MYVAR=kept")
    assert runtime.run(setup).exit_code == 0
    assert bash_syntax_error(runtime, f"touch {MARK}") is None
    broken = f"touch {MARK}; echo ("
    assert bash_syntax_error(runtime, broken) == host_bash_n(broken)[1]  # no xtrace line in bash's messages
    lines = runtime.run("builtin echo \"$MYVAR $PATH\"; printf x").output.splitlines()
    assert "kept /nonexistent" in lines and "shadowed" in lines  # the agent's state is its own, untouched
    runtime.run("set +eux +o pipefail; export PATH=/usr/bin:/bin")
    assert not marked(runtime)


def test_large_commands_and_nul_bytes(runtime_factory):
    runtime = runtime_factory("local")
    body = "x = 1\n" * 40_000  # 240 KB: beyond a pipe's buffer and the local runtime's inline limit
    assert bash_syntax_error(runtime, f"cat > /tmp/big.py <<'EOF'\n{body}EOF\ntouch {MARK}") is None
    assert "unexpected" in bash_syntax_error(runtime, f"cat > /tmp/big.py <<'EOF'\n{body}EOF\necho (")
    assert bash_syntax_error(runtime, "echo a\0b") is None
    assert not marked(runtime)


def test_a_check_that_cannot_be_made_is_not_a_syntax_error(runtime_factory, caplog):
    """No bash where $BASH points, or the verdict cut off by the output cap: the command is let through
    (the session reports any error when it runs), with a warning, never re-queried as a syntax error."""
    runtime = runtime_factory("local")
    runtime.run("BASH=/nonexistent/bash")
    with caplog.at_level(logging.WARNING):
        assert bash_syntax_error(runtime, "echo (") is None
    assert "could not check" in caplog.text
    runtime.run("BASH=/bin/bash")
    assert bash_syntax_error(runtime, "echo (") is not None
    capped = runtime_factory("local", output_limit=40)
    assert bash_syntax_error(capped, "echo (" + "y" * 100) is None


def test_ansi_c_quote_round_trips_every_byte(runtime_factory):
    runtime = runtime_factory("local")
    text = "".join(chr(c) for c in range(1, 256)) + "'\\\"$`\n日本"
    out = runtime.run(f"printf %s {ansi_c_quote(text)} | od -An -v -tx1").output
    assert bytes.fromhex(out.replace("\n", " ")) == text.encode()
    assert set(ansi_c_quote(text)[2:-1]) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,._+:@%/=-\\")
