"""The `sweagent-oec` command: one thin command per stage, nothing but argument handling.

Each stage keeps its typer command in its own `command.py` (argument parsing only, heavy imports
inside the function so `--help` stays fast); this file only names them (`COMMANDS`, imported
when the command runs or a help lists it) and turns a `UserError` into one red line and a
non-zero exit.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import typer
from typer.core import TyperGroup

# --- stage commands, registered (and listed by --help) in pipeline order: name -> (module, attribute).
# A module is imported only when its command runs or a help lists it, so `sweagent-oec convert`
# does not pay for the run loop's, the harness's or the analyses' imports. An attribute that is a
# Typer app is a group of commands (`tasks synth`), anything else a command function.
COMMANDS = {
    "tasks": ("sweagent_oec.tasks.command", "tasks_app"),
    "images": ("sweagent_oec.env.command", "images_app"),
    "run": ("sweagent_oec.commands", "run_command"),
    "run-batch": ("sweagent_oec.commands", "run_batch_command"),
    "merge-preds": ("sweagent_oec.harness.command", "merge_preds_command"),
    "eval": ("sweagent_oec.harness.command", "eval_command"),
    "score": ("sweagent_oec.harness.command", "score_command"),
    "convert": ("sweagent_oec.data.command", "convert_command"),
    "train": ("sweagent_oec.train.command", "train_command"),
    "rounds": ("sweagent_oec.commands", "rounds_command"),
    "shift": ("covariate_shift_analysis.command", "shift_command"),
    "categorize": ("failure_categorization.command", "categorize_command"),
    "view": ("sweagent_oec.view.command", "view_command"),
    "serve-student": ("sweagent_oec.commands", "serve_student_command"),
    "summary": ("sweagent_oec.commands", "summary_command"),
}


def _load_command(name: str):
    """The click command of `name`, built from its module on first use."""
    import importlib

    import typer.main

    module, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class _LazyGroup(TyperGroup):
    """The top-level group: commands come from `COMMANDS`, each imported when asked for."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = _load_command(cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except _usage_error() as e:  # an unknown name: suggest close ones among all commands, loaded or not
            from difflib import get_close_matches

            matches = get_close_matches(args[0], list(COMMANDS)) if args and "Did you mean" not in e.message else []
            if matches:
                e.message = f"{e.message.rstrip('.')}. Did you mean {', '.join(repr(m) for m in matches)}?"
            raise


def _usage_error() -> type:
    try:
        from typer._click.exceptions import UsageError  # typer >= 0.26 carries its own click
    except ImportError:  # pragma: no cover - older typer on the real click
        from click.exceptions import UsageError
    return UsageError


app = typer.Typer(
    cls=_LazyGroup,
    name="sweagent-oec",
    help="On-policy expert corrections for SWE agents. Commands in pipeline order: tasks and images, run and "
         "run-batch, eval and score, convert, train, rounds; then the analyses (shift, categorize) and view.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sweagent-oec {version('sweagent-oec')}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    pass


class _RichLogHandler(logging.Handler):
    """rich's log handler, made at the first record: a command that logs nothing (convert) does
    not import rich (~2 MiB, ~40 ms)."""

    def __init__(self) -> None:
        super().__init__()
        self._rich: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.logging import RichHandler

            self._rich = RichHandler(console=Console(stderr=True), show_path=False)
            self._rich.setFormatter(self.formatter)
        self._rich.emit(record)


def main() -> None:
    from sweagent_oec.errors import UserError
    from sweagent_oec.secrets import install_log_scrubber, scrub

    install_log_scrubber()  # known secrets (resolved config keys, API-key variables) never reach the log
    sys.excepthook = lambda kind, value, tb: sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))
    level = os.environ.get("OEC_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(message)s", handlers=[_RichLogHandler()])
    for noisy in ("LiteLLM", "litellm", "httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from typer._click import exceptions as cli_errors  # typer >= 0.26 carries its own click
    except ImportError:  # pragma: no cover - older typer on the real click
        from click import exceptions as cli_errors

    def fail(message: str, code: int) -> None:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {scrub(message)}", highlight=False, soft_wrap=True)
        sys.exit(code)

    try:
        returned = app(standalone_mode=False, prog_name="sweagent-oec")
    except UserError as e:
        fail(str(e), e.exit_code)
    except cli_errors.NoArgsIsHelpError as e:  # a bare command (group): its help, as typer shows it
        if str(e).strip():
            print(e)
        sys.exit(2)
    except cli_errors.UsageError as e:  # a bad option or value, an unknown choice: one line, like every other error
        hint = f" (see: {e.ctx.command_path} --help)" if e.ctx is not None else ""
        fail(" ".join(e.format_message().split()) + hint, e.exit_code)
    except typer.Abort:
        fail("aborted", 1)
    sys.exit(returned if isinstance(returned, int) else 0)


if __name__ == "__main__":
    main()
