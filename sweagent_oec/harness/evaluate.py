"""Evaluate predictions: per instance, a fresh environment, the patch applied, the tests run and graded.

Per instance, in a runtime from `make_runtime` (local or docker, same code):
  1. reset to the task state (the runtime's HEAD: the bug applied and committed);
  2. write the patch into the env and apply it: `git apply`, else `git apply --reject`, else
     `patch --batch --fuzz=5 -p1` (the tree is reset between attempts);
  3. restore the test files of FAIL_TO_PASS/PASS_TO_PASS from the task state, and undo the patch's
     changes to pytest's configuration and plugin files (conftest.py, pytest.ini, ...), so a patch
     cannot make tests pass by editing them or the way they run;
  4. run the test command between SWE-smith's start/end markers, pytest under the guard (guard.py:
     the installed runner, results over a private pipe, a verdict signed with a one-time nonce),
     parse, grade. A patch suspected of tampering (tampering.py) is graded unresolved.
Outputs `<output_dir>/<run_id>/<instance_id>/{patch.diff,test_output.txt,report.json}` and the
aggregate `<output_dir>/<run_id>/report.json`. report.json is written last: it marks the instance
done, and a later run skips it unless `redo_existing`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shlex
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from sweagent_oec.env import make_runtime
from sweagent_oec.env.runtime import EnvConfig, Runtime
from sweagent_oec.files import atomic_write_text
from sweagent_oec.harness.grading import Policy, report_from_statuses, run_problems
from sweagent_oec.harness.log_parser import END_LINE, PARSERS, START_LINE
from sweagent_oec.harness.profiles import TEST_COMMANDS, repo_of, swesmith_profile
from sweagent_oec.harness.tampering import (
    changed_files,
    guard_command,
    guard_source,
    log_disagreements,
    read_verdict,
    scan_patch,
)
from sweagent_oec.harness.predictions import Prediction
from sweagent_oec.harness.report import REPORT_NAME, aggregate_report, instance_report, write_report
from sweagent_oec.harness.resume import finished_report, settings_of, write_settings
from sweagent_oec.tasks.instances import Instance, diff_paths

log = logging.getLogger(__name__)

GOLD = "gold"
APPLY_COMMANDS = ("git apply --verbose", "git apply --verbose --reject", "patch --batch --fuzz=5 -p1 -i")
#: SWE-bench's markers for the patch step, so their tools read our logs too.
APPLY_PASS, APPLY_FAIL = ">>>>> Applied Patch", ">>>>> Patch Apply Failed"
TESTS_TIMEOUT = ">>>>> Tests Timed Out"
#: SWE-smith's own test command (python profile), plus -rA so skips and errors get a summary line.
SWESMITH_PYTEST = "pytest --disable-warnings --color=no --tb=no --verbose -rA"
#: Seconds for the harness's own git/patch commands (the tests get the caller's timeout).
STEP_TIMEOUT = 300
# Files pytest (or Python's start-up) reads before any test runs: through them a patch could skip,
# deselect or rewrite the outcome of the graded tests. A fix needs to change them only where the
# task's bug did. (A POSIX ERE: the env's grep selects them.)
TEST_INFRA = (r"(^|/)(conftest\.py|pytest\.ini|\.pytest\.ini|tox\.ini|setup\.cfg|pyproject\.toml"
              r"|sitecustomize\.py|usercustomize\.py|[^/]+\.pth)$")
#: Test logs can be long (SWE-smith's pandas log is 350 kB); keep them whole.
OUTPUT_LIMIT = 50_000_000


@dataclass
class EvalOptions:
    run_id: str
    output_dir: Path = Path("logs/run_evaluation")
    workers: int = 1
    #: Seconds the test command may run, per instance.
    timeout: float = 1800
    #: "local" or "docker"; `env` overrides it when given.
    runtime: str = "local"
    env: EnvConfig | None = None
    redo_existing: bool = False
    #: Evaluate each instance's reverse bug patch instead of a prediction.
    gold: bool = False
    policy: Policy = "strict"
    #: Show a rich progress bar.
    progress: bool = True
    #: "threads", or "ray": each instance a Ray task on `ray_address` (see sweagent_oec/ray_executor.py).
    executor: str = "threads"
    ray_address: str | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_id

    def env_config(self) -> EnvConfig:
        base = self.env or EnvConfig(type=self.runtime)  # type: ignore[arg-type]
        # Keep the image's own history: it holds test files the task's branch hid from the agent.
        return base.model_copy(update={"output_limit": max(base.output_limit, OUTPUT_LIMIT), "keep_source_git": True,
                                 "install_tools": False})


class _EvalError(Exception):
    """Ends one instance's evaluation with a reason for its report ("<code>: <detail>")."""


#: A pytest node id starts with a Python file: `tests/test_x.py::test_a`, `tests/test_x.py`.
_PYTEST_ID = re.compile(r"[^:\s]+\.py(::|$)")


class _Tampered(Exception):
    """Ends one instance's evaluation before its tests run: graded unresolved, with the reason."""


@dataclass
class RunPlan:
    """How one instance's tests run and are read."""

    command: str
    #: Log parser (log_parser.PARSERS) for the printed log.
    parser: str
    #: SWE-smith's selection: FAIL_TO_PASS/PASS_TO_PASS cut to tests in these files ([] = all).
    test_files: list[str] = field(default_factory=list)
    #: The command runs pytest (its log has a session summary).
    pytest: bool = True


def run_plan(instance: Instance, policy: Policy) -> RunPlan:
    """The command, parser and selection for an instance under a grading policy.

    Local tasks: their own `local.test_cmd` (it prints pytest's -rA summary, so our parser reads
    it under both policies). Docker (SWE-smith) instances: strict runs SWESMITH_PYTEST on every
    listed test file; swesmith runs SWE-smith's own command for the repository on the files of the
    FAIL_TO_PASS tests and reads the log with SWE-smith's parser for it (profiles.py).
    """
    swesmith = policy == "swesmith"
    if instance.local is not None:
        files = sorted({t.split("::", 1)[0] for t in instance.FAIL_TO_PASS if "::" in t}) if swesmith else []
        return RunPlan(instance.local.test_cmd, "pytest", files, "pytest" in instance.local.test_cmd)
    repo = repo_of(instance)
    listed = [*instance.FAIL_TO_PASS, *instance.PASS_TO_PASS]
    if repo not in TEST_COMMANDS and listed and not any(_PYTEST_ID.match(t) for t in listed):
        raise _EvalError(f"unsupported_repo: {repo} has no known test command or log parser, and its tests "
                         f"are not pytest node ids (e.g. {listed[0]!r})")
    if not swesmith:
        return RunPlan(pytest_command(instance), "pytest", [], True)
    profile = swesmith_profile(instance)
    return RunPlan(profile.test_cmd, profile.parser, profile.test_files, profile.pytest)


def listed_test_files(instance: Instance) -> list[str]:
    """The files that hold the instance's FAIL_TO_PASS/PASS_TO_PASS tests (pytest node ids)."""
    files = (test.split("::", 1)[0] for test in [*instance.FAIL_TO_PASS, *instance.PASS_TO_PASS] if "::" in test)
    return list(dict.fromkeys(files))


def pytest_command(instance: Instance) -> str:
    """The task's own `local.test_cmd`; for SWE-smith (docker) instances, pytest on the test files."""
    if instance.local is not None:
        return instance.local.test_cmd
    return " ".join([SWESMITH_PYTEST, *map(shlex.quote, listed_test_files(instance))])


def _one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:limit]


class _Session:
    """One instance's runtime plus what the harness did in it (kept for the report on failure)."""

    def __init__(self, runtime: Runtime, patch: str | None):
        self.rt = runtime
        self.patch = patch
        self.applied = False
        self.name = ""
        self.plan: RunPlan | None = None
        self.log: list[str] = []

    def sh(self, command: str, timeout: float = STEP_TIMEOUT, quiet: bool = False):
        result = self.rt.run(command, timeout=timeout)
        if not quiet:
            self.log.append(f"+ {command}\n{result.output}".rstrip("\n") + "\n")
        return result

    def must(self, command: str) -> str:
        result = self.sh(command, quiet=True)
        if result.exit_code != 0:
            raise _EvalError(f"environment_error: `{command}` failed ({result.exit_code}): {_one_line(result.output)}")
        return result.output

    def reset(self) -> None:
        self.must("git reset -q --hard HEAD && git clean -fdq")


def _gold_patch(s: _Session, instance: Instance, patch_path: str) -> str:
    """The fix = the bug patch reversed, as a diff against the task state (made by git itself)."""
    if not instance.patch.strip():
        raise _EvalError("empty_patch: the instance has no bug patch to reverse for --gold")
    quoted = shlex.quote(patch_path)
    s.rt.write_file(patch_path, instance.patch)
    s.must(f"git apply -R --index {quoted}")
    s.must(f"git -c core.quotepath=off diff --cached --no-color --binary > {quoted}.gold")
    gold = s.rt.read_file(f"{patch_path}.gold")
    s.must(f"git reset -q --hard HEAD && rm -f {quoted}.gold")
    return gold


def _apply(s: _Session, patch_path: str) -> None:
    patch = s.patch or ""
    # git apply rejects a patch whose last line lacks its newline ("corrupt patch").
    s.rt.write_file(patch_path, patch if patch.endswith("\n") else patch + "\n")
    first_error = ""
    for command in APPLY_COMMANDS:
        result = s.sh(f"{command} {shlex.quote(patch_path)}")
        if result.exit_code == 0:
            s.log.append(f"{APPLY_PASS} ({command})\n")
            s.applied = True
            return
        first_error = first_error or _one_line(result.output)  # git's own words say best what is wrong
        s.reset()  # undo a partial application before the next attempt
    s.log.append(f"{APPLY_FAIL}\n")
    raise _EvalError(f"patch_apply_failed: {first_error}")


def _restore_tests(s: _Session, instance: Instance, patch_path: str) -> None:
    """Test files back to the task state; one the task state lacks is removed (the patch added it).

    So are the pytest configuration and plugin files the patch changed or added (TEST_INFRA).
    The patch file goes in the same round trip.
    """
    files = listed_test_files(instance)
    source = getattr(s.rt, "test_source", None)
    # A file the task state lacks may have been removed from the agent's view (SWE-smith's branches
    # drop the FAIL_TO_PASS tests); the runtime's source history has it.
    from_source = (f"git --git-dir={shlex.quote(source[0])} --work-tree=. checkout -q {shlex.quote(source[1])} -- {{q}} 2>/dev/null || "
                   if source else "")
    steps = [f"rm -f -- {shlex.quote(patch_path)}"]
    steps += [f"{{ git checkout -q HEAD -- {q} 2>/dev/null || {from_source.format(q=q)}rm -f -- {q}; }}"
              for q in map(shlex.quote, files)]
    # Then what the patch changed or added among TEST_INFRA goes back (or away); their names are printed.
    # Files the task's own bug patch touched are spared: its fix may have to change them back.
    spared = "".join(f" -e {shlex.quote(f)}" for f in diff_paths(instance.patch))
    select = f"grep -E {shlex.quote(TEST_INFRA)}" + (f" | grep -v -x -F{spared}" if spared else "")
    steps.append("{ git -c core.quotepath=off diff --name-only HEAD; git -c core.quotepath=off ls-files --others --exclude-standard; }"
                 f" | sort -u | {{ {select} || true; }}"
                 ' | while IFS= read -r f; do { git checkout -q HEAD -- "$f" 2>/dev/null || rm -f -- "$f"; } && printf "%s\\n" "$f"; done')
    infra = [line for line in s.must(" && ".join(steps)).splitlines() if line.strip()]
    if files:
        s.log.append(f"restored test files from the task state: {' '.join(files)}\n")
    if infra:
        s.log.append(f"undid the patch's changes to test configuration: {' '.join(infra)}\n")


def _run(s: _Session, instance: Instance, opts: EvalOptions) -> dict:
    """Steps 1-4 of the module docstring; the test log accumulates in `s.log`. Returns the report."""
    # One round trip: back to the task state, and where the env keeps private temporary files.
    tmp = s.must('git reset -q --hard HEAD && git clean -fdq && printf %s "${TMPDIR:-/tmp}"').strip() or "/tmp"
    patch_path = f"{tmp}/oec_eval_{instance.instance_id}.diff"
    if opts.gold:
        s.patch = _gold_patch(s, instance, patch_path)
    suspicions = [] if opts.gold else scan_patch(s.patch or "", diff_paths(instance.patch), instance.repo or "")
    if any("git's own folder" in why for why in suspicions):
        raise _Tampered("; ".join(suspicions))  # not even applied: git would run its hooks
    _apply(s, patch_path)
    _restore_tests(s, instance, patch_path)
    plan = s.plan or run_plan(instance, opts.policy)
    nonce = secrets.token_hex(16)
    token = secrets.token_hex(8)
    guard_path, nonce_path = f"{tmp}/oec_guard_{token}.py", f"{tmp}/oec_guard_{token}.key"
    changed = [] if opts.gold else changed_files(s.patch or "")
    command = guard_command(plan.command, guard_path, nonce_path, changed) if plan.pytest else None
    if command is not None:
        s.rt.write_file(guard_path, guard_source())
        s.rt.write_file(nonce_path, nonce)
    s.log.append(f"{START_LINE}\n+ {plan.command}\n")
    # A subshell, so an `exit` or `cd` in the task's command cannot end or move the session.
    result = s.rt.run(f"( {command or plan.command} )", timeout=opts.timeout)
    verdict, forged, output = read_verdict(result.output, nonce) if command else (None, [], result.output)
    s.log.append(output.rstrip("\n") + "\n")
    if result.timed_out:
        s.log.append(f"{TESTS_TIMEOUT} after {opts.timeout:g} s\n")
        raise _EvalError(f"timeout: the test command ran past {opts.timeout:g} s")
    s.log.append(f"{END_LINE}\n")
    if result.exit_code in (126, 127):
        raise _EvalError(f"environment_error: the test command could not run (exit {result.exit_code}): {_one_line(result.output)}")
    # The whole output is read: markers printed by the code under test cannot choose what counts.
    statuses = PARSERS[plan.parser](output)
    tampering = [*suspicions, *forged]
    if command is None:
        problems = run_problems(statuses, instance.FAIL_TO_PASS, log=output, pytest_log=plan.pytest, exit_code=result.exit_code)
    elif verdict is None:
        problems = [f"the test guard gave no verdict (exit {result.exit_code}): {_one_line(output)}"]
    elif not verdict.started:
        raise _EvalError(f"environment_error: the test runner did not start (exit {result.exit_code}): {_one_line(output)}")
    else:
        s.log.append(f"test guard: {json.dumps({k: v for k, v in vars(verdict).items() if k != 'statuses'})}\n")
        if opts.policy == "strict":
            statuses = verdict.statuses
        tampering += verdict.tampering
        listed = [*instance.FAIL_TO_PASS, *instance.PASS_TO_PASS]
        # What the printed log claims (read both ways: ours keeps the worst status, SWE-smith's the
        # last line) must agree with what the guard saw.
        tampering += log_disagreements(statuses, verdict.statuses, listed)
        tampering += log_disagreements(PARSERS["pytest"](output), verdict.statuses, listed)
        problems = [*verdict.incomplete, *run_problems(statuses, instance.FAIL_TO_PASS)]
    return report_from_statuses(
        statuses, instance.FAIL_TO_PASS, instance.PASS_TO_PASS,
        fail_to_fail=getattr(instance, "FAIL_TO_FAIL", None) or [],
        pass_to_fail=getattr(instance, "PASS_TO_FAIL", None) or [],
        model_patch=s.patch, model_name_or_path=GOLD if opts.gold else s.name, applied=True, policy=opts.policy,
        test_files=plan.test_files, problems=problems, tampering=tampering)


def evaluate_instance(instance: Instance, prediction: Prediction | None, opts: EvalOptions) -> dict:
    """Evaluate one instance and write its files; the instance's failures go into its report."""
    out = opts.run_dir / instance.instance_id
    out.mkdir(parents=True, exist_ok=True)
    name = GOLD if opts.gold or prediction is None else prediction.model_name_or_path
    patch = None if prediction is None else prediction.model_patch
    if not opts.gold and not (patch and patch.strip()):
        atomic_write_text(out / "patch.diff", patch or "")
        atomic_write_text(out / "test_output.txt", "empty patch: nothing to apply, tests not run\n")
        report = instance_report(model_patch=patch, model_name_or_path=name, error="empty_patch: the prediction has no patch")
        write_settings(out, settings_of(opts))
        write_report(out / REPORT_NAME, report)
        return report
    s: _Session | None = None
    try:
        plan = run_plan(instance, opts.policy)  # an unsupported repository needs no environment
        try:
            runtime = make_runtime(instance, opts.env_config())
        except Exception as e:  # failing to start is the environment's fault, not the patch's
            raise _EvalError(f"environment_error: the runtime did not start: {_one_line(str(e) or type(e).__name__)}") from e
        s = _Session(runtime, patch)
        s.name, s.plan = name, plan
        try:
            report = _run(s, instance, opts)
        finally:
            runtime.close()
        test_log = "".join(s.log)
    except _Tampered as e:
        test_log = "".join(s.log) + f"\nnot applied: suspected test tampering: {e}\n"
        report = instance_report(model_patch=patch, model_name_or_path=name, applied=False,
                                 unresolved_reason=f"suspected_test_tampering: {e}")
    except Exception as e:
        if not isinstance(e, _EvalError):  # a dead session or a bug: record it, keep the batch going
            log.exception("evaluating %s failed", instance.instance_id)
            e = _EvalError(f"environment_error: {type(e).__name__}: {_one_line(str(e))}")
        test_log = ("".join(s.log) if s else "") + f"\nevaluation stopped: {e}\n"
        report = instance_report(
            model_patch=s.patch if s else patch,
            model_name_or_path=name,
            applied=bool(s and s.applied),
            error=str(e),
        )
    atomic_write_text(out / "patch.diff", (s.patch if s else patch) or "")
    atomic_write_text(out / "test_output.txt", test_log)
    write_settings(out, settings_of(opts))
    write_report(out / REPORT_NAME, report)
    return report


def evaluate(instances: list[Instance], predictions: dict[str, Prediction] | None, opts: EvalOptions) -> dict:
    """Evaluate every predicted instance (or every instance with `opts.gold`); returns the aggregate.

    Predictions for ids the dataset lacks are reported, one warning line each, and left out.
    """
    by_id = {instance.instance_id: instance for instance in instances}
    if opts.gold:
        todo = list(instances)
        predictions = {}
    else:
        predictions = predictions or {}
        for iid in sorted(set(predictions) - set(by_id)):
            log.warning("prediction for %s: no such instance in the dataset; not evaluated", iid)
        todo = [by_id[iid] for iid in predictions if iid in by_id]
    reports: dict[str, dict] = {}
    pending = []
    for instance in todo:
        done = None if opts.redo_existing else finished_report(opts.run_dir / instance.instance_id, settings_of(opts))
        if done is not None:
            reports[instance.instance_id] = done
        else:
            pending.append(instance)
    if len(reports):
        log.info("%d of %d instances already have a report in %s; skipping them (--redo-existing to rerun)",
                 len(reports), len(todo), opts.run_dir)
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    _run_pending(pending, predictions, opts, reports)
    aggregate = aggregate_report(reports)
    atomic_write_text(opts.run_dir / REPORT_NAME, json.dumps(aggregate, indent=4) + "\n")
    return aggregate


def _run_pending(pending: list[Instance], predictions: dict[str, Prediction], opts: EvalOptions, reports: dict) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if opts.executor == "ray" and pending:
        from sweagent_oec.ray_executor import eval_on_ray

        eval_on_ray(pending, predictions, opts, reports)
        return

    # An overall bar, and a row per instance being graded (with how long it has been running).
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn())
    with Progress(*columns, disable=not opts.progress or not pending, transient=False) as progress:
        task = progress.add_task(f"eval {opts.run_id}", total=len(pending), status="resolved 0, errors 0")
        counts = {"resolved": 0, "error": 0}

        def graded(instance: Instance) -> dict:
            row = progress.add_task(f"  {instance.instance_id}", total=None, status="testing")
            try:
                return evaluate_instance(instance, predictions.get(instance.instance_id), opts)
            finally:
                progress.remove_task(row)

        pool = ThreadPoolExecutor(max_workers=max(1, opts.workers))
        try:
            futures = {pool.submit(graded, inst): inst for inst in pending}
            for future in as_completed(futures):
                report = future.result()
                reports[futures[future].instance_id] = report
                counts["resolved"] += bool(report.get("resolved"))
                counts["error"] += bool(report.get("error"))
                progress.update(task, advance=1, status=f"resolved {counts['resolved']}, errors {counts['error']}")
        finally:
            # On Ctrl-C, instances not started yet are dropped (they have no report: a rerun does them).
            pool.shutdown(wait=True, cancel_futures=True)
