"""What the local and docker sessions share: the protocol of one persistent bash (MarkerSession),
the reader that splits one command's stream into output, exit code and session state, and the
shell-side refusals of interactive programs. The runtimes only differ in transport."""

from __future__ import annotations

import time

from sweagent_oec.env.runtime import OUTPUT_CAPPED_MARKER, CommandResult, RuntimeError_

#: What a transport's pump returns instead of an exit code.
TIMED_OUT, SESSION_ENDED = object(), object()


class MarkerSession:
    """A command goes in; its output comes back up to an end marker carrying the exit code, then the
    shell's state (`export -p` and the cwd) closed by the marker again. A command that outlives its
    deadline is interrupted; one that cannot be, or a shell that ends, gets a new session put back
    to the last saved state.

    A transport supplies `closed`, `_send_command(command, reader, deadline)` (send, then read until
    an exit code, TIMED_OUT or SESSION_ENDED), `_interrupt(reader)` (True once the command stopped),
    `_ended_exit_code()`, `_stop_session()` and `_start_session()`; and sets `_mark`, `config`,
    `info`, `_leftover` and `_saved_state`.
    """

    #: Seconds a restarted session gets to take back the saved state.
    restart_timeout = 30.0
    #: How a command's stream is read (the local runtime reads the end from a separate channel).
    reader_class: type  # OutputReader (assigned after its definition, below)

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run `command` in the session; `timeout` None waits for as long as it takes."""
        if self.closed:
            raise RuntimeError_("the runtime is closed")
        start = time.monotonic()
        result = self._exchange(command, None if timeout is None else start + timeout)
        result.duration = time.monotonic() - start
        return result

    def _exchange(self, command: str, deadline: float | None) -> CommandResult:
        reader = self.reader_class(self._mark, self.config.output_limit, self._leftover)
        self._leftover = b""
        rc, notes = self._send_command(command, reader, deadline), []
        timed_out = rc is TIMED_OUT
        if timed_out:
            if not self._interrupt(reader):
                self._restart()
                notes.append("<the command did not stop when interrupted: the session was restarted with its cwd and "
                             "exported variables; background processes were stopped>")
            rc = None
        elif rc is SESSION_ENDED:
            rc = self._ended_exit_code()
            self._restart()
            how = f"exited (exit code {rc})" if rc is not None else "closed its output"
            notes.append(f"<the shell {how}: a new session was started with the previous cwd and exported variables; "
                         "background processes were stopped>")
        self._leftover = reader.after_marker
        if reader.state is not None:
            self._saved_state = reader.state.decode(errors="replace")
        output = reader.text() + ("\n" + "\n".join(notes) if notes else "")
        return CommandResult(output=output, exit_code=rc, timed_out=timed_out)

    def _prepare(self, config) -> None:
        """The end of start-up: the agent's tools, then the configured start-up commands."""
        if config.install_tools:
            from sweagent_oec.tools.install import install_tools

            install_tools(self)
        for command in config.startup_commands:
            result = self.run(command, timeout=600)
            if result.exit_code != 0:
                raise RuntimeError_(f"startup command {command!r} failed (exit {result.exit_code}): "
                                    f"{result.output.strip()[-500:]}")

    def _restart(self) -> None:
        # Back to where the agent was after its last finished command: its `export -p` and cwd.
        saved = self._saved_state
        self._stop_session()
        self.info.notes.append("the bash session was restarted after a command could not be interrupted or exited")
        self._start_session()
        self._exchange(saved + "\ntrue", time.monotonic() + self.restart_timeout)

# Programs that wait for a terminal; the session has none, so they are refused at once.
_TERMINAL_PROGRAMS = ["vim", "vi", "nvim", "view", "nano", "pico", "emacs", "joe", "mcedit",
                      "less", "more", "most", "top", "htop", "watch", "tmux", "screen"]
# REPLs: refused only when started bare (with arguments they run scripts and are fine).
_REPLS = ["python", "python2", "python3", "ipython", "ipython3", "bpython", "node", "irb"]
_EDIT_HINT = "use str_replace_editor (or cat, grep, sed -n) to view and edit files"


def refusal_functions() -> str:
    """Shell functions that shadow interactive programs with a one-line refusal (no process started)."""
    lines = []
    for name in _TERMINAL_PROGRAMS:
        lines.append(f'{name}() {{ echo "{name} is interactive and not available here: the session has no '
                     f'terminal; {_EDIT_HINT}." >&2; return 1; }}')
    for name in _REPLS:
        lines.append(f'{name}() {{ if [ $# -eq 0 ]; then echo "a bare {name} starts an interactive REPL, which is '
                     f'not available here: run a script or use {name} -c \'...\'." >&2; return 1; fi; '
                     f'command {name} "$@"; }}')
    return "\n".join(lines) + "\n"


class OutputReader:
    """Reads one command's stream: output (capped at `limit` bytes), then the end marker with the exit
    code, then the session's state (`export -p` and the cwd) closed by the marker again."""

    def __init__(self, mark: bytes, limit: int, initial: bytes):
        self.mark, self.limit = mark, limit
        self.kept, self.dropped, self.carry = bytearray(), 0, b""
        self.exit_code: int | None = None
        self.state: bytes | None = None
        self.after_marker = b""
        if initial:
            self.feed(initial)

    def _keep(self, data: bytes) -> None:
        room = self.limit - len(self.kept)
        self.kept += data[:room]
        self.dropped += max(0, len(data) - room)

    def feed(self, chunk: bytes) -> bool:
        """Take a chunk; True once the exit code and the state have been read."""
        data = self.carry + chunk
        if self.exit_code is None:
            at = data.find(self.mark)
            if at < 0:
                # Hold back a tail that could be the start of a marker split across chunks.
                split = max(0, len(data) - len(self.mark) + 1)
                self._keep(data[:split])
                self.carry = data[split:]
                return False
            self._keep(data[:at])
            end = data.find(b"\n", at)
            if end < 0:
                self.carry = data[at:]
                return False
            self.exit_code = int(data[at + len(self.mark):end] or b"-1")
            data = data[end + 1:]
        at = data.find(self.mark)
        if at < 0:
            self.carry = data
            return False
        self.state, self.after_marker, self.carry = data[:at], data[at + len(self.mark) + 1:], b""
        return True

    def text(self) -> str:
        out = bytes(self.kept).decode("utf-8", errors="replace")
        if self.dropped:
            out += OUTPUT_CAPPED_MARKER.format(limit=self.limit, dropped=self.dropped)
        return out


MarkerSession.reader_class = OutputReader
