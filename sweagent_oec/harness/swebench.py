"""`eval --harness swebench`: SWE-bench instances scored by SWE-bench's own package (swebench==4.1.0).

Per instance, as SWE-bench's `run_instance` does it, in a fresh container of the instance's image
(`Instance.image_name`: `swebench/sweb.eval.x86_64.<id>`, the repo at /testbed on `base_commit`):
  1. the prediction is written to /tmp/patch.diff and applied with SWE-bench's `GIT_APPLY_CMDS`,
     in its order and without a reset in between, as it does;
  2. the TestSpec's eval script (`make_eval_script_list`: reset the test files, apply `test_patch`,
     the repo's test command between SWE-bench's markers) runs as /eval.sh; its output is
     `test_output.txt`, byte for byte what SWE-bench's harness would log;
  3. `get_eval_report` grades that log with the repo's log parser: its report, plus
     `model_name_or_path`, is the instance's `report.json` (our layout; `error` when ungraded).
The aggregate, the error codes and resume are the SWE-smith path's (`harness/report.py`).
The image is never built here: SWE-bench's environment images are made once, by SWE-bench.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from sweagent_oec.env.runtime import EnvConfig
from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text
from sweagent_oec.harness.predictions import Prediction
from sweagent_oec.harness.report import REPORT_NAME, aggregate_report, instance_report, write_report
from sweagent_oec.harness.resume import eval_settings, finished_report, write_settings
from sweagent_oec.tasks.instances import Instance

log = logging.getLogger(__name__)

#: Where SWE-bench puts the prediction and the eval script in the container.
PATCH_PATH, EVAL_PATH = "/tmp/patch.diff", "/eval.sh"
#: Seconds for applying the patch (the tests get the caller's timeout).
APPLY_TIMEOUT = 300
#: Runs what follows with exactly the container's start-up environment.
CLEAN_ENV = "readarray -d '' __oec_env < /proc/1/environ; exec env -i \"${__oec_env[@]}\""
#: SWE-bench logs are long (a whole django test module); keep them whole.
OUTPUT_LIMIT = 50_000_000


def _swebench():
    """SWE-bench's harness modules; a UserError saying how to install them when missing."""
    try:
        from swebench.harness import constants, grading, run_evaluation
        from swebench.harness.test_spec import create_scripts, test_spec
    except ImportError as e:
        raise UserError(f"--harness swebench needs SWE-bench's package ({e}); install it: pip install 'swebench==4.1.0'") from None
    return constants, grading, run_evaluation, create_scripts, test_spec


HARNESSES = ("auto", "swesmith", "swebench")


def choose_harness(harness: str, instances: list[Instance], runtime: str = "docker") -> str:
    """`swesmith` or `swebench` for these instances; UserError when the choice cannot grade them.
    (`swebench` always runs in SWE-bench's images: `runtime` is not used for it.)"""
    if harness not in HARNESSES:
        raise UserError(f"--harness must be one of {', '.join(HARNESSES)}, not {harness!r}")
    swebench = [i.instance_id for i in instances if i.is_swebench]
    if harness == "auto":
        harness = "swebench" if instances and len(swebench) == len(instances) else "swesmith"
    if harness == "swesmith" and swebench:
        raise UserError(f"{len(swebench)} of the instances are SWE-bench's (e.g. {swebench[0]}): their `patch` is the fix, "
                        "not a bug; grade them with --harness swebench")
    if harness == "swebench":
        if len(swebench) != len(instances):
            other = next(i.instance_id for i in instances if not i.is_swebench)
            raise UserError(f"--harness swebench grades SWE-bench instances only (rows with test_patch and version); {other} is not one")
    return harness


def swebench_row(instance: Instance) -> dict[str, Any]:
    """The instance as SWE-bench's row again: `patch` is the gold fix."""
    row = instance.model_dump(mode="json", exclude={"local"})
    row["patch"] = row.pop("gold_patch", "") or ""
    row["version"] = str(row["version"])
    return row


def unsupported(instance: Instance) -> str | None:
    """Why SWE-bench's package cannot grade this instance (its specs table lacks the repo or version)."""
    constants = _swebench()[0]
    if not instance.is_swebench:
        return "not a SWE-bench instance (no test_patch/version): grade it with --harness swesmith"
    specs = constants.MAP_REPO_VERSION_TO_SPECS.get(instance.repo)
    if specs is None:
        return f"repo {instance.repo!r} is not in swebench's specs (MAP_REPO_VERSION_TO_SPECS)"
    version = str(getattr(instance, "version"))
    if version not in specs:
        return f"{instance.repo} version {version!r} is not in swebench's specs (it has {', '.join(sorted(specs))})"
    return None


def make_spec(instance: Instance):
    """SWE-bench's TestSpec for the instance: its repo and eval scripts, made by its own functions.

    The same as `make_test_spec` but for `env_script_list`, left empty: that script builds the
    environment image (and downloads the repo's requirements from GitHub to write it); grading
    runs in the built image and never reads it. The image is `instance.image_name`.
    """
    constants, _, _, create_scripts, test_spec = _swebench()
    if why := unsupported(instance):
        raise UserError(f"{instance.instance_id}: {why}")
    row = swebench_row(instance)
    specs = constants.MAP_REPO_VERSION_TO_SPECS[row["repo"]][row["version"]]
    env_name, repo_dir = "testbed", "/testbed"
    return test_spec.TestSpec(
        instance_id=row["instance_id"], repo=row["repo"], version=row["version"],
        repo_script_list=create_scripts.make_repo_script_list(specs, row["repo"], repo_dir, row["base_commit"], env_name),
        eval_script_list=create_scripts.make_eval_script_list(row, specs, env_name, repo_dir, row["base_commit"], row["test_patch"]),
        env_script_list=[], arch="x86_64", FAIL_TO_PASS=instance.FAIL_TO_PASS, PASS_TO_PASS=instance.PASS_TO_PASS,
        language=constants.MAP_REPO_TO_EXT[row["repo"]], docker_specs=specs.get("docker_specs", {}), namespace=None)


def _settings(instance: Instance, opts) -> dict:
    image = opts.env.image_name if getattr(opts, "env", None) and opts.env.image_name else instance.image_name
    return eval_settings(harness="swebench", runtime="docker", grading="swebench", image=image, timeout=opts.timeout)


class _Ungraded(Exception):
    """Ends one instance with a reason for its report ("<code>: <detail>")."""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:300]


def evaluate_swebench_instance(instance: Instance, prediction: Prediction | None, opts) -> dict:
    """One instance, SWE-bench's way; writes patch.diff, run_instance.log, eval.sh, test_output.txt,
    report.json (last) under `opts.run_dir / instance_id`."""
    from sweagent_oec.env.docker import DockerRuntime, connect, find_image

    constants, grading, run_evaluation, _, _ = _swebench()
    out = opts.run_dir / instance.instance_id
    out.mkdir(parents=True, exist_ok=True)
    name = "gold" if opts.gold or prediction is None else prediction.model_name_or_path
    patch = getattr(instance, "gold_patch", None) if opts.gold else (None if prediction is None else prediction.model_patch)
    steps: list[str] = []
    applied = False
    for stale in ("test_output.txt", "eval.sh"):  # an earlier attempt's, which this one may not reach
        (out / stale).unlink(missing_ok=True)
    try:
        atomic_write_text(out / "patch.diff", patch or "")
        if not (patch and patch.strip()):
            raise _Ungraded("empty_patch: the prediction has no patch" if not opts.gold else "empty_patch: the instance has no gold patch")
        if why := unsupported(instance):
            raise _Ungraded(f"unsupported_repo: {why}")
        spec = make_spec(instance)
        env = opts.env_config() if hasattr(opts, "env_config") else EnvConfig(type="docker")
        env = env.model_copy(update={"type": "docker", "install_tools": False, "output_limit": max(env.output_limit, OUTPUT_LIMIT)})
        try:
            client = connect(env.docker_host)
            image = find_image(client, [n for n in (env.image_name or instance.image_name,) if n])
            runtime = DockerRuntime(client, image, env, name=instance.instance_id)
        except Exception as e:  # failing to start is the environment's fault, not the patch's
            raise _Ungraded(f"environment_error: the runtime did not start: {_last_line(str(e) or type(e).__name__)}") from e
        try:
            steps.append(f"image {image}\n")
            runtime.write_file(PATCH_PATH, patch)
            for command in run_evaluation.GIT_APPLY_CMDS:
                result = runtime.run(f"cd /testbed && {command} {PATCH_PATH}", timeout=APPLY_TIMEOUT)
                steps.append(f"+ {command} {PATCH_PATH}\n{result.output}")
                if result.exit_code == 0:
                    steps.append(f"{constants.APPLY_PATCH_PASS}\n")
                    applied = True
                    break
            if not applied:
                steps.append(f"{constants.APPLY_PATCH_FAIL}\n")
                raise _Ungraded(f"patch_apply_failed: {_last_line(result.output)}")
            atomic_write_text(out / "eval.sh", spec.eval_script)
            runtime.write_file(EVAL_PATH, spec.eval_script)
            # In the container's own environment (that of its first process), from /testbed, as
            # SWE-bench's exec runs it: not the session's exports (LANG, TERM...), which tests can see.
            result = runtime.run(f"cd /testbed && ({CLEAN_ENV} /bin/bash {EVAL_PATH})", timeout=opts.timeout)
            test_output = result.output
            if result.timed_out:
                test_output += f"\n\nTimeout error: {opts.timeout:g} seconds exceeded."
            atomic_write_text(out / "test_output.txt", test_output)
            if result.timed_out:
                raise _Ungraded(f"timeout: the eval script ran past {opts.timeout:g} s")
        finally:
            runtime.close()
        graded = grading.get_eval_report(
            test_spec=spec, prediction={"instance_id": instance.instance_id, "model_name_or_path": name, "model_patch": patch},
            test_log_path=str(out / "test_output.txt"), include_tests_status=True)[instance.instance_id]
        report = {**graded, "model_name_or_path": name}
    except Exception as e:
        if not isinstance(e, (_Ungraded, UserError)):  # a dead session or a bug: record it, keep the batch going
            log.exception("evaluating %s failed", instance.instance_id)
            e = _Ungraded(f"environment_error: {type(e).__name__}: {_last_line(str(e))}")
        steps.append(f"evaluation stopped: {e}\n")
        report = instance_report(model_patch=patch, model_name_or_path=name, applied=applied, error=str(e))
    atomic_write_text(out / "run_instance.log", "".join(steps))
    write_settings(out, _settings(instance, opts))
    write_report(out / REPORT_NAME, report)
    return report


def evaluate_swebench(instances: list[Instance], predictions: dict[str, Prediction] | None, opts) -> dict:
    """Every predicted instance (every instance with `opts.gold`), SWE-bench's way; the aggregate.

    `opts` is the SWE-smith path's `EvalOptions` (run dir, workers, timeout, env, resume, gold).
    """
    _swebench()  # fail at once, not once per instance, when the package is missing
    by_id = {instance.instance_id: instance for instance in instances}
    predictions = {} if opts.gold else (predictions or {})
    for iid in sorted(set(predictions) - set(by_id)):
        log.warning("prediction for %s: no such instance in the dataset; not evaluated", iid)
    todo = list(instances) if opts.gold else [by_id[iid] for iid in predictions if iid in by_id]
    reports: dict[str, dict] = {}
    pending = []
    for instance in todo:
        done = None if opts.redo_existing else finished_report(opts.run_dir / instance.instance_id, _settings(instance, opts))
        if done is not None:
            reports[instance.instance_id] = done
        else:
            pending.append(instance)
    if reports:
        log.info("%d of %d instances already have a report from these settings in %s; skipping them (--redo-existing to rerun)",
                 len(reports), len(todo), opts.run_dir)
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("eval {task.fields[run_id]} (SWE-bench)"), BarColumn(), MofNCompleteColumn(),
               TextColumn("resolved {task.fields[resolved]}"), TimeElapsedColumn())
    with Progress(*columns, disable=not getattr(opts, "progress", True) or not pending) as progress:
        bar = progress.add_task("eval", total=len(pending), run_id=opts.run_id, resolved=0)
        pool = ThreadPoolExecutor(max_workers=max(1, opts.workers))
        try:
            futures = {pool.submit(evaluate_swebench_instance, inst, predictions.get(inst.instance_id), opts): inst
                       for inst in pending}
            for future in as_completed(futures):
                report = reports[futures[future].instance_id] = future.result()
                progress.update(bar, advance=1, resolved=progress.tasks[0].fields["resolved"] + bool(report.get("resolved")))
        finally:
            # On Ctrl-C, instances not started yet are dropped (no report: a rerun does them).
            pool.shutdown(wait=True, cancel_futures=True)
    aggregate = aggregate_report(reports)
    atomic_write_text(opts.run_dir / REPORT_NAME, json.dumps(aggregate, indent=4) + "\n")
    return aggregate
