"""The run loop: query -> parse -> execute -> observe, until submit, a limit, or an error.

With a switching model the student answers until its schedule says the expert takes over; the
conversation is then rebuilt in the expert's own format. Every step and assistant message
records which role and model produced it; each step is appended to the step log and the `.traj` is
written when the run ends (data/trajectory.py, TrajectoryWriter).
"""

from __future__ import annotations

import logging
import re
import secrets
import shlex
import threading
import time
import traceback
from pathlib import Path

from sweagent_oec.data.actions import FormatError, new_tool_call_id, parse_action, render_action
from sweagent_oec import progress
from sweagent_oec.secrets import scrub
from sweagent_oec.agent.actors import Actor
from sweagent_oec.agent.history import MessageCache
from sweagent_oec.agent.prompts import observation_message, render, system_message
from sweagent_oec.data.trajectory import STUDENT, ModelStats, TrajectoryWriter
from sweagent_oec.env.runtime import Runtime, RuntimeError_, secret_variable
from sweagent_oec.exits import AgentExit, CommandTimeoutLimit, EnvironmentFailure, FormatErrorLimit, Interrupted, Submitted
from sweagent_oec.models.switching import SwitchSchedule
from sweagent_oec.tasks.instances import Instance
from sweagent_oec.tools.install import FILEMAP_VARIABLE
from sweagent_oec.tools.specs import Action, openai_tools, to_command_line

log = logging.getLogger(__name__)
#: What running code or tests leaves in a repo and a patch must not carry (git pathspecs, excluded).
LITTER_PATHSPECS = " ".join(f"':(exclude,glob)**/{p}'" for p in ("__pycache__/**", "*.pyc", "*.pyo", ".pytest_cache/**", "*.egg-info/**"))

_SUBMIT_LINE = re.compile(r"^\s*submit(\s+(-f|--force))?\s*$")


class Rejected(Exception):
    """A well-formed action that is not run (blocklisted, or bash that does not parse): re-queried."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def submit_call(action: Action) -> bool | None:
    """None if `action` is not a submit; else whether it forces the submission (`submit -f`)."""
    if action.name == "submit":
        return bool(action.arguments.get("force"))
    if action.name == "bash":
        match = _SUBMIT_LINE.match(str(action.arguments.get("command", "")))
        if match:
            return bool(match.group(1))
    return None


#: Bytes that stand for themselves in a $'...' word; every other byte is written as \xHH.
_PLAIN_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,._+:@%/=-")
_ANSI_C = [chr(b) if b in _PLAIN_BYTES else f"\\x{b:02x}" for b in range(256)]


def ansi_c_quote(text: str) -> str:
    """`text` as one bash word, $'...', holding only letters, digits, a few punctuation marks and \\xHH
    escapes: no quote, backslash or newline of the text can end or bend it. NUL cannot be in a bash
    string (the session drops it too)."""
    data = text.replace("\0", "").encode("utf-8", errors="replace")
    return "$'" + "".join(map(_ANSI_C.__getitem__, data)) + "'"


def syntax_check_command(command: str, tag: str) -> str:
    """A command for the agent's own session that parses `command` with `bash -n` and runs none of it.

    The command travels as data (ansi_c_quote, a here-string) into a bash that only reads and parses: the
    session's own bash binary ($BASH: the bash that will run the command), with an empty environment (no
    BASH_ENV; messages in the C locale). It replaces a subshell, so the session keeps its state. In that
    subshell, before it: POSIX mode puts `unset`, `set` and `exec` before any function of the agent's,
    `printf` is freed of one, the agent's `set -e`/`-u`/`-x`/`pipefail` are off, and a `tag` line marks
    where bash's messages begin (after anything the session printed first, such as an agent's xtrace).
    A failed parse's status comes after them on a `tag` line, through `||`: the session's own `set -e`
    does not end it.
    """
    return (f"(POSIXLY_CORRECT=y; \\unset -f printf; \\set +euvx +o pipefail; \\printf '%s\\n' {tag}; "
            f"\\exec -c -a bash \"$BASH\" --norc --noprofile -n 2>&1 <<< {ansi_c_quote(command)}"
            f") || \\builtin printf '\\n%s %d\\n' {tag} \"$?\"")


#: bash's exit statuses for input that does not parse.
_PARSE_ERROR = ("1", "2")


def bash_syntax_error(runtime: Runtime, command: str) -> str | None:
    """bash -n's messages when `command` does not parse; None when it does, or when the check could not be
    made (then the command runs, and the session shows any error). Checked in the agent's session, so the
    host never parses the agent's text and the check costs the same at every step (no fork of this
    growing process)."""
    tag = f"OEC_BASH_N_{secrets.token_hex(8)}"  # unknown to the command: nothing it holds can pass for a tag
    try:
        result = runtime.run(syntax_check_command(command, tag), timeout=30)
    except RuntimeError_ as e:
        raise EnvironmentFailure(str(e)) from e
    output = "\n" + result.output
    start, end = output.find(f"\n{tag}\n"), output.rfind(f"\n{tag} ")
    if start >= 0 and end < 0 and result.exit_code == 0:
        return None
    status = output[end + len(tag) + 2:].strip() if end > start >= 0 else ""
    # Lines naming the tag between the two are the session's xtrace of the status line, not bash's.
    messages = "".join(line for line in output[start + len(tag) + 2:end].splitlines(keepends=True) if tag not in line)
    if status in _PARSE_ERROR and "cannot create temp file for here-document" not in messages:  # the session's failure
        return messages
    log.warning("bash -n could not check a command in the session (%s); it runs unchecked",
                "timed out" if result.timed_out else f"exit {result.exit_code}: {result.output[-200:]!r}")
    return None


class Agent:
    def __init__(self, instance: Instance, runtime: Runtime, actors: list[Actor], schedule: SwitchSchedule | None,
                 traj_path: Path, replay_config: dict | None = None, stop: threading.Event | None = None):
        self.instance, self.runtime, self.actors, self.schedule = instance, runtime, actors, schedule
        self.actor = actors[0]
        self.writer = TrajectoryWriter(traj_path)
        self.replay_config = replay_config or {}
        self.stop = stop or threading.Event()
        self.steps: list[dict] = []
        self.history: list[dict] = []
        self.info: dict = {"submission": None, "exit_status": None}
        self.switch_step: int | None = None
        self.student_queries = 0
        #: The student's actions and observations so far, in step order (what switch criteria read).
        self.student_actions: list[str] = []
        self.student_observations: list[str] = []
        self.timeouts_in_a_row = 0
        self.execution_time = 0.0
        #: Review messages shown so far (review-on-submit); the session's, across a switch.
        self.review_stage = 0
        #: Each actor's view of the history (its processors, its message shape), kept between steps.
        self.views = {id(actor): MessageCache(actor.history_processors) for actor in actors}

    # ------------------------------------------------------------ the loop

    def run(self) -> dict:
        try:
            self.start()
            while True:
                self.step()
        except Submitted as e:
            self.info.update(submission=e.submission, exit_status="submitted")
        except AgentExit as e:
            self._autosubmit(e.exit_status, str(e))
        except Exception as e:  # a bug or an unforeseen failure: recorded, never lost
            self.info["traceback"] = scrub(traceback.format_exc())  # an error may carry a key it was given
            self._autosubmit("exit_error", f"{type(e).__name__}: {e}")
        finally:
            progress.finish(self.instance.instance_id)
        self.save()
        return self.info

    def start(self) -> None:
        """Record the task's commit (submissions diff against it) and open the conversation."""
        self.base_commit = self._sh("git rev-parse HEAD").strip()
        self.configure_session(self.actor)
        self.history = self.conversation(self.actor)

    def configure_session(self, actor: Actor) -> None:
        """The acting model's tool settings in the session: its env_variables, and whether the
        editor shows large Python files as a file map (USE_FILEMAP)."""
        settings = {**actor.tools.env_variables, FILEMAP_VARIABLE: "true" if actor.tools.use_filemap else "false"}
        for name in [n for n, v in settings.items() if secret_variable(n, v)]:  # secrets never reach the session
            log.warning("not passing %s into the agent's session: secrets never reach it", name)
            del settings[name]
        self._sh("export " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in settings.items()))

    def step(self) -> None:
        if self.stop.is_set():
            raise Interrupted(self.instance.instance_id)
        actor, reply, thought, action, messages, format_errors = self.query()
        started, submitted = time.perf_counter(), None
        try:
            output = self.execute(action)
        except Submitted as e:  # the submit turn is a step too: its reply is training data
            submitted, output = e, e.submission
        self.record(actor, reply, thought, action, output, messages, time.perf_counter() - started, format_errors)
        if submitted:
            raise submitted
        self.save()

    def query(self):
        """Ask the acting model for an action, with SWE-agent's re-query policy.

        A reply that cannot be parsed, a blocklisted command (tools.filter) or a bash command that does
        not parse (`bash -n`) is not run: the model is asked again, seeing only its last failed reply
        and that failure's error message. A step takes at most `agent.max_requeries` replies in all;
        failed ones are kept in the step's extra_info.format_errors, never in the history.
        """
        format_errors: list[dict] = []
        messages, retry, failures = None, [], 0
        while True:
            # Checked before every query, re-queries included: when they count as steps, the
            # expert may take over in the middle of a student's run of malformed replies.
            if self.schedule and self.actor.role == STUDENT and self._switch_due(failures):
                self.switch_to(self.actors[1])
                messages, retry, failures = None, [], 0
            actor = self.actor
            if messages is None:
                messages = self.views[id(actor)](self.history)
            tools = openai_tools(actor.tool_names) if actor.style == "function_calling" else None
            query = messages + retry
            reply = actor.model.query(query, tools)
            # A student with no schedule (a branching rollout) counts only the queries that were steps.
            if actor.role == STUDENT and (not failures or (self.schedule is not None and self.schedule.count_format_errors)):
                self.student_queries += 1
            thought, action = "", None
            try:
                thought, action = parse_action(actor.style, reply.content, reply.tool_calls)
                self.check(actor, action)
                return actor, reply, thought, action, query, format_errors
            except FormatError as e:
                kind, error = "format", render(actor.tools.format_error_template, error=str(e), exception_message=str(e))
            except Rejected as e:
                kind, error = e.kind, e.message
            failures += 1
            format_errors.append({"kind": kind, "response": reply.content, "tool_calls": reply.tool_calls, "error": error,
                                  "model_role": actor.role, "model_name": actor.model.name})
            if failures >= actor.max_requeries:
                self.info["format_errors"] = format_errors
                raise FormatErrorLimit(f"{failures} replies in a row were malformed, blocked or did not parse "
                                       f"(agent.max_requeries={actor.max_requeries})")
            # Only the last failed reply and its error are shown, for this step's re-query only.
            shown = (reply.content or "").strip() or (to_command_line(action) if action else "") or "(no output)"
            retry = [
                {"role": "assistant", "content": shown, "agent": "main", "message_type": "assistant", "thought": thought,
                 "action": to_command_line(action) if action else "", "tool_calls": None, "is_format_error": True,
                 "model_role": actor.role, "model_name": actor.model.name},
                {"role": "user", "content": error, "agent": "main", "message_type": "user", "is_format_error": True},
            ]

    def check(self, actor: Actor, action: Action) -> None:
        """Refuse, before it runs, a blocklisted command or a bash command that does not parse."""
        if action.name == "submit":
            return
        command = to_command_line(action)
        if actor.tools.filter.blocks(command):
            raise Rejected("blocked", render(actor.tools.filter.blocklist_error_template, action=command))
        if action.name == "bash" and actor.tools.check_bash_syntax:
            error = bash_syntax_error(self.runtime, command)
            if error is not None:
                raise Rejected("bash_syntax", render(actor.templates.shell_check_error_template, action=command,
                                                     bash_stdout="", bash_stderr=error))

    # ------------------------------------------------------------ actions

    def execute(self, action: Action) -> str:
        force = submit_call(action)
        if force is not None:
            return self.submit(force)
        tools = self.actor.tools
        command = to_command_line(action)
        result = self._run(command, tools.execution_timeout)
        self.execution_time += result.duration
        if self.execution_time > tools.total_execution_timeout:
            raise CommandTimeoutLimit(f"commands ran {self.execution_time:.0f}s in all (total_execution_timeout)")
        if not result.timed_out:
            self.timeouts_in_a_row = 0
            return result.output
        self.timeouts_in_a_row += 1
        if self.timeouts_in_a_row >= tools.max_consecutive_execution_timeouts:
            raise CommandTimeoutLimit(f"{self.timeouts_in_a_row} commands in a row timed out")
        return render(self.actor.templates.command_timeout_template, command=command, timeout=tools.execution_timeout)

    def submit(self, force: bool) -> str:
        """Review-on-submit (tools/review_on_submit_m): each of the first calls shows the next review
        message, with the diff, and submits nothing; the call after them (or `submit -f`) submits."""
        messages = self.actor.tools.review_messages
        if force or self.review_stage >= len(messages):
            raise Submitted(self._diff())
        message = messages[self.review_stage]
        self.review_stage += 1
        return render(message, diff=self._diff(), problem_statement=self.instance.problem_statement,
                      working_dir=self.runtime.info.workdir)

    def _run(self, command: str, timeout: float):
        try:
            return self.runtime.run(command, timeout=timeout)
        except RuntimeError_ as e:
            raise EnvironmentFailure(str(e)) from e

    def _sh(self, command: str) -> str:
        result = self._run(command, 120)
        if result.timed_out or result.exit_code != 0:
            raise EnvironmentFailure(f"{command!r} failed: {result.output[-300:]}")
        return result.output

    def _diff(self) -> str:
        # Build litter (bytecode, caches) never goes into a submission: binary hunks make `git apply` refuse it.
        return self._sh(f"git add -A -- . {LITTER_PATHSPECS} >/dev/null && git -c core.quotepath=false diff --cached {self.base_commit}")

    def _autosubmit(self, exit_status: str, reason: str) -> None:
        log.info("%s: %s (%s)", self.instance.instance_id, exit_status, reason)
        self.info["exit_reason"] = scrub(reason)
        try:
            submission = self._diff()
        except Exception:
            submission = None
        self.info.update(submission=submission, exit_status=f"submitted ({exit_status})" if submission else exit_status)

    # ------------------------------------------------------------ conversation

    def _switch_due(self, malformed_in_a_row: int = 0) -> bool:
        # Copies (at C speed: the lists are kept up to date by record, not rebuilt from the steps each time).
        return self.schedule.due(len(self.student_actions), self.student_queries, self.actor.model.stats,
                                 actions=list(self.student_actions), observations=list(self.student_observations),
                                 malformed_in_a_row=malformed_in_a_row, problem_statement=self.instance.problem_statement)

    def switch_to(self, expert: Actor) -> None:
        self.actor, self.switch_step = expert, len(self.steps)
        self.configure_session(expert)
        self.history = self.conversation(expert)
        log.info("%s: expert %s takes over at step %d", self.instance.instance_id, expert.model.name, self.switch_step)

    def conversation(self, actor: Actor) -> list[dict]:
        """System and task messages in `actor`'s format, then every step so far re-rendered for it."""
        variables = dict(problem_statement=self.instance.problem_statement, working_dir=self.runtime.info.workdir,
                         instance_id=self.instance.instance_id, repo=self.instance.repo)
        history = [
            {"role": "system", "content": system_message(actor.templates, actor.style, actor.tool_names, **variables),
             "agent": "main", "message_type": "system_prompt"},
            {"role": "user", "content": render(actor.templates.instance_template, **variables),
             "agent": "main", "message_type": "observation"},
        ]
        for step in self.steps:
            call = step["extra_info"]["tool_call"]
            message = render_action(actor.style, step["thought"], Action(call["name"], call["arguments"]))
            history += self._turn(actor, message, step, step["observation"])
        return history

    def _turn(self, actor: Actor, message: dict, step: dict, output: str) -> list[dict]:
        """The assistant item and the observation item for one step, in `actor`'s format."""
        tool_calls = message.get("tool_calls")
        if actor.style == "function_calling" and tool_calls:
            tool_calls = [{**tool_calls[0], "id": tool_calls[0].get("id") or new_tool_call_id()}]
        assistant = {"role": "assistant", "content": message.get("content") or "", "agent": "main",
                     "message_type": "action", "thought": step["thought"], "action": step["action"],
                     "model_role": step["model_role"], "model_name": step["model_name"]}
        observation = {"role": "user", "content": observation_message(actor.templates, output),
                       "agent": "main", "message_type": "observation"}
        if tool_calls:
            assistant["tool_calls"] = tool_calls
            observation.update(role="tool", tool_call_ids=[tool_calls[0]["id"]])
        return [assistant, observation]

    def record(self, actor: Actor, reply, thought: str, action: Action, output: str, messages: list[dict],
               duration: float, format_errors: list[dict]) -> None:
        output = scrub(output)  # a command may print a secret the process knows (an API key it was given)
        step = {"action": to_command_line(action), "observation": output, "response": reply.content or "",
                "thought": thought, "execution_time": duration, "state": {}, "query": messages,
                "extra_info": {"tool_call": {"name": action.name, "arguments": action.arguments}, **reply.extra},
                "model_role": actor.role, "model_name": actor.model.name}
        if format_errors:
            step["extra_info"]["format_errors"] = format_errors
        self.steps.append(step)
        if actor.role == STUDENT:
            self.student_actions.append(step["action"])
            self.student_observations.append(output)
        # Keep the reply exactly as the model wrote it (content and tool calls) in the history.
        self.history += self._turn(actor, {"content": reply.content, "tool_calls": reply.tool_calls}, step, output)
        progress.step(self.instance.instance_id, role=actor.role, model=actor.model.name, index=len(self.steps) - 1,
                      action=step["action"], observation=output,
                      cost=sum(a.model.stats.instance_cost for a in self.actors))

    # ------------------------------------------------------------ output

    def stats(self) -> dict:
        total = ModelStats()
        for actor in self.actors:
            total = total.add(actor.model.stats)
        info = {"model_stats": total.model_dump()}
        if self.schedule:
            student, expert = self.actors
            info["oec"] = {
                "switch_step": self.switch_step, "switched": self.switch_step is not None,
                **self.schedule.record(),
                "student_model": student.model.name, "expert_model": expert.model.name,
                "model_stats": {a.role: a.model.stats.model_dump() for a in self.actors},
            }
        return info

    def save(self) -> None:
        self.info.update(self.stats())
        self.writer.save(self.steps, self.history, self.info, self.replay_config, self.runtime.info.as_dict())
