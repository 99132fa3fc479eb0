"""The `sweagent-oec` command: one thin command per stage, nothing but argument handling.

Each stage keeps its typer command in its own `command.py` (argument parsing only, heavy imports
inside the function so `--help` stays fast); this file only registers them and turns a
`UserError` into one red line and a non-zero exit.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import typer

app = typer.Typer(
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


# --- stage commands, one line each, registered (and listed by --help) in pipeline order ---
from sweagent_oec.tasks.command import tasks_app; app.add_typer(tasks_app, name="tasks")  # noqa: E402,E702
from sweagent_oec.env.command import images_app; app.add_typer(images_app, name="images")  # noqa: E402,E702
from sweagent_oec.commands import run_batch_command, run_command; app.command("run")(run_command); app.command("run-batch")(run_batch_command)  # noqa: E402,E702
from sweagent_oec.harness.command import merge_preds_command; app.command("merge-preds")(merge_preds_command)  # noqa: E402,E702
from sweagent_oec.harness.command import eval_command, score_command; app.command("eval")(eval_command); app.command("score")(score_command)  # noqa: E402,E702
from sweagent_oec.data.command import convert_command; app.command("convert")(convert_command)  # noqa: E402,E702
from sweagent_oec.train.command import train_command; app.command("train")(train_command)  # noqa: E402,E702
from sweagent_oec.commands import rounds_command; app.command("rounds")(rounds_command)  # noqa: E402,E702
from covariate_shift_analysis.command import shift_command; app.command("shift")(shift_command)  # noqa: E402,E702
from failure_categorization.command import categorize_command; app.command("categorize")(categorize_command)  # noqa: E402,E702
from sweagent_oec.view.command import view_command; app.command("view")(view_command)  # noqa: E402,E702
from sweagent_oec.commands import serve_student_command, summary_command; app.command("serve-student")(serve_student_command); app.command("summary")(summary_command)  # noqa: E402,E702


def main() -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    from sweagent_oec.errors import UserError
    from sweagent_oec.secrets import install_log_scrubber, scrub

    install_log_scrubber()  # known secrets (resolved config keys, API-key variables) never reach the log
    sys.excepthook = lambda kind, value, tb: sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))
    level = os.environ.get("OEC_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=Console(stderr=True), show_path=False)])
    for noisy in ("LiteLLM", "litellm", "httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from typer._click import exceptions as cli_errors  # typer >= 0.25 carries its own click
    except ImportError:  # pragma: no cover - older typer on the real click
        from click import exceptions as cli_errors

    def fail(message: str, code: int) -> None:
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
