"""Task synthesis: procedural bugs on a real Python project, kept when its own tests catch them.

    source (folder | git repo | PyPI `name==version`)
      -> <out>/repo   git repository at the base commit (the correct code)
      -> <out>/venv   pytest + the project's test dependencies (the project itself is NOT installed:
                      tests import the working copy through PYTHONPATH, recorded in `local.env`)
      -> baseline     the suite run twice at base; tests that pass both times
      -> candidates   one mutation per (function, kind), seeded order; each applied in a scratch
                      clone and tested with a timeout, in parallel; result cached per candidate
      -> instances    bugs that fail >= 1 passing test and leave >= 1 passing: JSONL, atomic

Everything under <out> is reused on a second run, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text
from sweagent_oec.tasks.instances import Instance, LocalTask, write_instances_jsonl
from sweagent_oec.tasks.mutations import KINDS, FileMutator, Mutation

log = logging.getLogger(__name__)

#: Fixed identity and dates, so the same source gives the same base commit everywhere.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "oec", "GIT_AUTHOR_EMAIL": "oec@localhost", "GIT_COMMITTER_NAME": "oec",
    "GIT_COMMITTER_EMAIL": "oec@localhost", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent",
}
PASSING = ("PASSED", "XFAIL")  # graded as passing, as in SWE-smith
_STATUSES = ("PASSED", "FAILED", "ERROR", "XFAIL", "XPASS")
_SDIST_SPEC = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")
_SKIP_DIRS = {"tests", "test", "testing", "docs", "doc", "examples", "example", "benchmarks", "scripts", "build", "dist", ".git", ".tox", ".venv", "venv", "__pycache__"}
_TEST_EXTRAS = ("test", "tests", "testing")


@dataclass
class TestRun:
    statuses: dict[str, str]
    #: Short failure messages from pytest's summary ("FAILED id - message"), by test id.
    messages: dict[str, str] = field(default_factory=dict)
    timed_out: bool = False
    tail: str = ""

    def passing(self) -> set[str]:
        return {t for t, s in self.statuses.items() if s in PASSING}


# --- pytest output --------------------------------------------------------------------------


def parse_pytest_report(output: str) -> TestRun:
    """Test statuses from pytest's `-rA` short summary. Ids with whitespace are left out: log
    parsers that split on whitespace (SWE-smith's) cannot read them back."""
    statuses: dict[str, str] = {}
    messages: dict[str, str] = {}
    for line in output.splitlines():
        status, _, rest = line.partition(" ")
        if status not in _STATUSES or not rest.strip():
            continue
        # Only PASSED lines have no " - message"; elsewhere an id with " - " in it is ambiguous.
        test, _, message = (rest, "", "") if status == "PASSED" else rest.partition(" - ")
        test = test.strip()
        if any(c.isspace() for c in test) or test.count("[") != test.count("]"):
            continue
        statuses[test] = status
        if message.strip():
            messages[test] = message.strip()
    return TestRun(statuses, messages, tail="\n".join(output.splitlines()[-15:]))


def test_env(local: LocalTask) -> dict[str, str]:
    """What the tests run with: the task's venv first on PATH and its `env`, nothing else of ours."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", "COLUMNS": "200"}
    if local.venv:
        env["PATH"] = f"{local.venv}/bin:{env['PATH']}"
        env["VIRTUAL_ENV"] = local.venv
    env.update(local.env)
    return env


def run_tests(workdir: Path, local: LocalTask, timeout: float) -> TestRun:
    """Run `local.test_cmd` in `workdir`; a run past `timeout` is killed with its whole process group."""
    proc = subprocess.Popen(["bash", "-c", local.test_cmd], cwd=workdir, env=test_env(local), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        run = parse_pytest_report(output)
        run.timed_out = True
        return run
    return parse_pytest_report(output)


# --- the base repository and its venv ---------------------------------------------------------


def git(repo: Path, *args: str, input: str | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, input=input, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo}: {done.stderr.strip()}")
    return done.stdout.strip()


def fetch_sdist(spec: str, dest: Path, sha256: str | None = None) -> Path:
    """`name==version` from PyPI as an unpacked source tree (pip download --no-binary :all:)."""
    m = _SDIST_SPEC.match(spec)
    if not m:
        raise UserError(f"bad source {spec!r}: not a folder, and not a PyPI pin like tinydb==4.8.2.")
    download = dest / "download"
    archives = sorted(download.glob("*.tar.gz")) + sorted(download.glob("*.zip"))
    if not archives:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", spec, "-d", str(download)],
                              capture_output=True, text=True)
        archives = sorted(download.glob("*.tar.gz")) + sorted(download.glob("*.zip"))
        if done.returncode != 0 or not archives:
            last = (done.stderr.strip().splitlines() or ["no archive"])[-1]
            raise UserError(f"could not download the sdist of {spec}: {last}; check the name and version (PyPI must be reachable).")
    archive = archives[0]
    if sha256 is not None:
        got = hashlib.sha256(archive.read_bytes()).hexdigest()
        if got != sha256:
            archive.unlink()
            raise UserError(f"{archive.name}: sha256 {got} is not the pinned {sha256}; the download was removed, check the pin.")
    unpacked = dest / "sdist"
    if not unpacked.exists():
        tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".sdist."))
        if archive.suffix == ".zip":
            shutil.unpack_archive(archive, tmp)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        tops = list(tmp.iterdir())
        (tops[0] if len(tops) == 1 and tops[0].is_dir() else tmp).rename(unpacked)
        shutil.rmtree(tmp, ignore_errors=True)
    return unpacked


def make_base_repo(source: str, out: Path, sha256: str | None = None) -> tuple[Path, str]:
    """`<out>/repo` at the base commit; a git source keeps its history (base = its HEAD)."""
    repo = out / "repo"
    if (repo / ".git").exists():
        return repo, git(repo, "rev-parse", "HEAD")
    path = Path(source).expanduser()
    tmp = out / ".repo.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if (path / ".git").exists():
        git(out, "clone", "-q", str(path.resolve()), str(tmp))
    else:
        tree = path if path.is_dir() else fetch_sdist(source, out, sha256)
        shutil.copytree(tree, tmp, ignore=shutil.ignore_patterns(".git", ".tox", ".venv", ".pytest_cache", "__pycache__", "*.egg-info", "*.pyc"))
        git(tmp, "init", "-q", "-b", "main")
        git(tmp, "add", "-A")
        git(tmp, "commit", "-q", "--no-verify", "-m", f"base: {path.name if path.is_dir() else source}")
    tmp.rename(repo)
    return repo, git(repo, "rev-parse", "HEAD")


def python_root(repo: Path) -> str:
    """Where the package imports from: `src` for a src-layout project, else the root."""
    src = repo / "src"
    return "src" if src.is_dir() and any((d / "__init__.py").exists() for d in src.iterdir() if d.is_dir()) else "."


def test_deps(repo: Path) -> list[str]:
    """Runtime + test requirements declared in pyproject.toml (PEP 621 and PEP 735), minus the project itself."""
    pyproject = repo / "pyproject.toml"
    if not pyproject.exists():
        return []
    try:
        data = tomllib.loads(pyproject.read_text())
    except tomllib.TOMLDecodeError:
        return []
    project = data.get("project", {})
    deps = list(project.get("dependencies", []))
    for group in _TEST_EXTRAS:
        deps += project.get("optional-dependencies", {}).get(group, [])
        deps += [d for d in data.get("dependency-groups", {}).get(group, []) if isinstance(d, str)]
    own = re.sub(r"[-_.]+", "-", str(project.get("name", ""))).lower()
    return [d for d in deps if re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", d, 1)[0]).lower() != own]


def build_venv(venv: Path, deps: list[str]) -> str:
    """A fresh venv with `deps`; pip from this interpreter installs into it (no pip inside: faster)."""
    python = venv / "bin" / "python"
    cmd = f"{sys.executable} -m venv --without-pip {venv} && {sys.executable} -m pip --python {python} install -q " + " ".join(f"'{d}'" for d in deps)
    done_marker = venv / ".oec-done"
    if not done_marker.exists() or done_marker.read_text() != cmd + "\n":  # missing, half-built, or other deps
        shutil.rmtree(venv, ignore_errors=True)
        done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            raise UserError(f"could not build the test venv at {venv}: {last}; fix the dependencies (--deps).")
        done_marker.write_text(cmd + "\n")
    return cmd


def source_files(repo: Path, root: str) -> list[str]:
    """The project's own modules (no tests, docs, setup scripts), relative to the repo, sorted."""
    files = []
    for path in sorted((repo / root).rglob("*.py")):
        rel = path.relative_to(repo)
        parts = rel.relative_to(root).parts if root != "." else rel.parts
        name = path.name
        if any(p in _SKIP_DIRS or p.startswith(".") for p in parts[:-1]):
            continue
        if name in ("setup.py", "conftest.py", "noxfile.py", "fabfile.py") or name.startswith("test_") or name.endswith("_test.py"):
            continue
        if len(parts) > 1 and not (repo / root / parts[0] / "__init__.py").exists():
            continue  # a folder that is not a package (tools, vendored scripts)
        files.append(str(rel))
    return files


# --- candidates --------------------------------------------------------------------------------


def candidates(repo: Path, files: list[str], seed: int, kinds: tuple[str, ...], limit: int) -> list[Mutation]:
    """Up to `limit` mutations, in an order drawn from `seed` over all (file, function, kind) slots.

    Mutations are made lazily, so a large project costs only the slots it uses.
    """
    import random

    mutators = {f: FileMutator((repo / f).read_text(), f) for f in files}
    slots = [(f, name, kind) for f, m in mutators.items() for name in m.functions for kind in kinds]
    random.Random(seed).shuffle(slots)
    found, seen = [], set()
    for f, name, kind in slots:
        if len(found) >= limit:
            break
        mutation = mutators[f].mutate(name, kind, seed)
        if mutation and mutation.patch not in seen:
            seen.add(mutation.patch)
            found.append(mutation)
    return found


def scratch_clone(repo: Path, commit: str, parent: Path) -> Path:
    work = Path(tempfile.mkdtemp(dir=parent, prefix="scratch."))
    git(parent, "clone", "-q", "--shared", "--no-checkout", str(repo), str(work))
    git(work, "checkout", "-q", commit)
    return work


def apply_patch(work: Path, patch: str) -> None:
    git(work, "apply", "--whitespace=nowarn", "-", input=patch)


def _cache_key(commit: str, test_cmd: str, patch: str) -> str:
    return hashlib.sha256(f"{commit}\0{test_cmd}\0{patch}".encode()).hexdigest()[:16]


def candidate_cache(cache: Path, commit: str, local: LocalTask, patch: str) -> Path:
    return cache / f"{_cache_key(commit, local.test_cmd, patch)}.json"


def test_candidate(repo: Path, commit: str, local: LocalTask, patch: str, cache: Path, scratch: Path, timeout: float) -> dict:
    """The suite's result with `patch` applied; cached on disk by (commit, test command, patch)."""
    path = candidate_cache(cache, commit, local, patch)
    if path.exists():
        return json.loads(path.read_text())
    work = scratch_clone(repo, commit, scratch)
    try:
        apply_patch(work, patch)
        run = run_tests(work, local, timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"statuses": run.statuses, "messages": run.messages, "timed_out": run.timed_out}
    atomic_write_text(path, json.dumps(result))
    return result


def baseline(repo: Path, commit: str, local: LocalTask, cache: Path, scratch: Path, timeout: float) -> set[str]:
    """Tests that pass at base in two runs (a test that flips between runs is no ground truth)."""
    path = cache / "baseline.json"
    key = _cache_key(commit, local.test_cmd, "")
    if path.exists() and json.loads(path.read_text())["key"] == key:
        return set(json.loads(path.read_text())["passing"])
    def once(_: int) -> TestRun:
        work = scratch_clone(repo, commit, scratch)
        try:
            return run_tests(work, local, timeout)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    with ThreadPoolExecutor(2) as pool:  # the two runs at once: this step is otherwise serial
        runs = list(pool.map(once, range(2)))
    for run in runs:
        if run.timed_out or not run.passing():
            why = "timed out" if run.timed_out else "no test passed"
            last = run.tail.splitlines()[-1] if run.tail else "no output"
            raise UserError(f"the test suite does not run at base ({why}; `{local.test_cmd}`): {last}; fix --deps/--test-path or raise --timeout.")
    passing = runs[0].passing() & runs[1].passing()
    atomic_write_text(path, json.dumps({"key": key, "passing": sorted(passing)}))
    return passing


# --- instances ---------------------------------------------------------------------------------


def _hidden(mutation: Mutation) -> list[str]:
    """What an error line must not contain: it would point at the bug."""
    return [mutation.path, Path(mutation.path).name, mutation.function.rsplit(".", 1)[-1]]


def _error_lines(result: dict, failing: list[str], hidden: list[str]) -> list[str]:
    """Distinct short failure messages, minus any that would point at the mutated file."""
    lines = []
    for test in failing:
        # Paths of this run's scratch copy and pytest's tmp folders differ on every machine.
        message = re.sub(r"[^\s'\"]*/(\.scratch/scratch\.[^/\s]+|pytest-of-[^/\s]+/pytest-\d+)/", "", result["messages"].get(test, ""))
        if message and message not in lines and not any(h in message for h in hidden):
            lines.append(message)
    return lines[:5]


def template_statement(failing: list[str], errors: list[str]) -> str:
    shown = "\n".join(f"- `{t}`" for t in failing[:8])
    more = f"\n- ... and {len(failing) - 8} more" if len(failing) > 8 else ""
    seen = "\n".join(f"    {e}" for e in errors)
    parts = [
        "Some tests started failing. They passed before, and the test code is right: the bug is in the library.",
        f"Failing tests:\n{shown}{more}",
    ]
    if seen:
        parts.append(f"Errors seen:\n{seen}")
    parts.append("Find the cause and fix it so that these tests pass, without breaking the other tests.")
    return "\n\n".join(parts)


def lm_statement(model: str, failing: list[str], errors: list[str], api_base: str | None = None) -> str:
    """An issue written by an LM (through litellm) from the failing tests; it never sees the bug's diff."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline, and ~1 s faster to import
    import litellm

    prompt = (
        "Write a concise GitHub issue, as a user of this Python library would, about a regression.\n"
        "These tests now fail:\n" + "\n".join(f"- {t}" for t in failing[:8]) + "\n"
        "Errors seen:\n" + ("\n".join(errors) or "(none printed)") + "\n"
        "Describe the wrong behaviour and what was expected. Do not guess at or name the code that causes it. "
        "Answer with the issue text only."
    )
    try:
        response = litellm.completion(model=model, api_base=api_base, messages=[{"role": "user", "content": prompt}], temperature=0.0)
    except Exception as e:  # one line per failure, as every user-facing error here
        raise UserError(f"model {model!r} could not write a problem statement: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}; check --model/--api-base and the key.") from None
    text = (response.choices[0].message.content or "").strip()
    if not text:
        raise UserError(f"model {model!r} returned an empty problem statement; try another model or drop --model.")
    return text


def repo_slug(source: str, repo_name: str | None) -> tuple[str, str]:
    """(owner/name for `repo`, owner__name for ids)."""
    if repo_name:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_name):
            raise UserError(f"bad --repo-name {repo_name!r}; write owner/name, e.g. msiemens/tinydb.")
        owner, name = repo_name.split("/")
    elif _SDIST_SPEC.match(source) and not Path(source).exists():
        owner, name = "pypi", _SDIST_SPEC.match(source).group(1)
    else:
        owner, name = "local", Path(source).expanduser().resolve().name
    return f"{owner}/{name}", f"{owner}__{name}"


@dataclass
class SynthConfig:
    max_candidates: int = 50
    max_instances: int | None = None
    workers: int = 2
    timeout: float = 120.0
    seed: int = 42
    kinds: tuple[str, ...] = KINDS
    #: Drop bugs that fail more tests than this (a bug that breaks half the suite is no realistic task).
    max_fail_to_pass: int | None = None
    deps: tuple[str, ...] = ()
    test_path: str | None = None
    repo_name: str | None = None
    sha256: str | None = None
    model: str | None = None
    api_base: str | None = None


def _check_source_folder(path: Path) -> None:
    """An empty folder, or a git repository without a commit, has no project to break: say so before any work."""
    if not path.is_dir():
        return
    if (path / ".git").exists():
        if subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=path, capture_output=True).returncode != 0:
            raise UserError(f"{path}: a git repository without a commit; commit the project first (git add -A && git commit).")
    elif not any(p.is_file() for p in path.rglob("*")):
        raise UserError(f"{path}: the folder is empty; give a Python project folder (its source and tests).")


def synthesize(source: str, out: Path | str, config: SynthConfig = SynthConfig()) -> list[Instance]:
    """Bugs on `source` that its tests catch, as Instances; also written to `<out>/instances.jsonl`."""
    out = Path(out).expanduser().resolve()
    if config.workers < 1 or config.max_candidates < 1 or config.timeout <= 0:
        raise UserError("--workers and --max-candidates must be >= 1 and --timeout > 0.")
    if not Path(source).expanduser().is_dir() and not _SDIST_SPEC.match(source):
        raise UserError(f"{source}: no such folder, and not a PyPI pin like tinydb==4.8.2.")
    _check_source_folder(Path(source).expanduser())
    out.mkdir(parents=True, exist_ok=True)
    marker = out / "source.json"
    origin = str(Path(source).expanduser().resolve()) if Path(source).expanduser().is_dir() else source
    if marker.exists() and json.loads(marker.read_text())["source"] != origin:
        raise UserError(f"{out} was made from {json.loads(marker.read_text())['source']!r}, not {origin!r}; use another --out.")
    atomic_write_text(marker, json.dumps({"source": origin}))
    started = time.monotonic()

    repo, commit = make_base_repo(source, out, config.sha256)
    # The base commit's date, not the clock: the same seed gives the same file, byte for byte.
    created_at = git(repo, "show", "-s", "--format=%cI", commit)
    repo_full, slug = repo_slug(source, config.repo_name)
    root = python_root(repo)
    test_path = config.test_path if config.test_path is not None else next((p for p in ("tests", "test") if (repo / p).is_dir()), "")
    if test_path and not (repo / test_path).exists():
        raise UserError(f"--test-path {test_path!r} does not exist in {repo}; give a path relative to the project root.")
    deps = list(config.deps) + test_deps(repo)
    if not any(re.match(r"pytest\b(?!-)", d) for d in deps):
        deps.insert(0, "pytest")
    venv = out / "venv"
    install_cmd = build_venv(venv, deps)
    local = LocalTask(
        repo_dir=str(repo), venv=str(venv), install_cmd=install_cmd,
        test_cmd=f"python -m pytest -rA -p no:cacheprovider {test_path}".strip(),
        # No bytecode in the working copy, so the agent's diff and `git status` stay clean.
        env={"PYTHONPATH": root, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    cache, scratch = out / "cache", out / ".scratch"
    shutil.rmtree(scratch, ignore_errors=True)  # clones left by an interrupted run
    cache.mkdir(exist_ok=True)
    scratch.mkdir()
    passing = baseline(repo, commit, local, cache, scratch, config.timeout)
    log.info("%s: base %s, %d passing tests (%.0f s)", repo_full, commit[:8], len(passing), time.monotonic() - started)

    files = source_files(repo, root)
    if not files:
        raise UserError(f"no Python source files found under {repo / root}; is this a Python project?")
    todo = candidates(repo, files, config.seed, config.kinds, config.max_candidates)
    kept: list[tuple[Instance, Mutation, dict]] = []
    with ThreadPoolExecutor(config.workers) as pool:
        # In order, a few at a time, so --max-instances stops early and keeps the seeded order.
        for start in range(0, len(todo), config.workers * 2):
            batch = todo[start : start + config.workers * 2]
            results = list(pool.map(lambda m: test_candidate(repo, commit, local, m.patch, cache, scratch, config.timeout), batch))
            for mutation, result in zip(batch, results):
                instance = _instance(mutation, result, passing, config, local, repo_full, slug, commit, created_at)
                if instance:
                    kept.append((instance, mutation, result))
            if config.max_instances is not None and len(kept) >= config.max_instances:
                kept = kept[: config.max_instances]
                break
    if config.model:
        for instance, mutation, result in kept:
            written = result.setdefault("problem_statements", {})
            if config.model not in written:
                written[config.model] = lm_statement(config.model, instance.FAIL_TO_PASS, _error_lines(result, instance.FAIL_TO_PASS, _hidden(mutation)), config.api_base)
                # Kept with the candidate's result, so a resumed run does not pay for it again.
                atomic_write_text(candidate_cache(cache, commit, local, mutation.patch), json.dumps(result))
            instance.problem_statement = written[config.model]
    instances = [instance for instance, _, _ in kept]
    shutil.rmtree(scratch, ignore_errors=True)
    write_instances_jsonl(out / "instances.jsonl", instances)
    log.info("%s: %d instances from %d candidates (%.0f s)", repo_full, len(instances), len(todo), time.monotonic() - started)
    return instances


def _instance(mutation: Mutation, result: dict, passing: set[str], config: SynthConfig, local: LocalTask,
              repo_full: str, slug: str, commit: str, created_at: str) -> Instance | None:
    if result["timed_out"]:
        return None
    now_passing = {t for t, s in result["statuses"].items() if s in PASSING}
    fail_to_pass = sorted(passing - now_passing)
    pass_to_pass = sorted(passing & now_passing)
    if not fail_to_pass or not pass_to_pass:
        return None
    if config.max_fail_to_pass is not None and len(fail_to_pass) > config.max_fail_to_pass:
        return None
    statement = template_statement(fail_to_pass, _error_lines(result, fail_to_pass, _hidden(mutation)))
    return Instance(
        instance_id=f"{slug}.{commit[:8]}.func_pm_{mutation.kind}__{hashlib.sha256(mutation.patch.encode()).hexdigest()[:8]}",
        repo=repo_full,
        patch=mutation.patch,
        FAIL_TO_PASS=fail_to_pass,
        PASS_TO_PASS=pass_to_pass,
        problem_statement=statement,
        image_name=None,
        base_commit=commit,
        created_at=created_at,
        local=local,
    )


def validate_instances(instances: list[Instance], timeout: float = 300.0, workers: int = 2) -> dict[str, list[str]]:
    """Run each instance's tests at gold (base) and bug state: the problems found per id (empty: valid).

    Instances that share repo, base commit and test command share one gold run.
    """
    problems: dict[str, list[str]] = {i.instance_id: [] for i in instances}
    for i in instances:
        if i.local is None or not i.base_commit:
            problems[i.instance_id].append("no local task (local.repo_dir and base_commit)")
    todo = [i for i in instances if not problems[i.instance_id]]

    def run(instance: Instance, patch: str | None, tmp: Path) -> TestRun | str:
        work = scratch_clone(Path(instance.local.repo_dir), instance.base_commit, tmp)
        try:
            if patch is not None:
                apply_patch(work, patch)
            return run_tests(work, instance.local, timeout)
        except RuntimeError as e:
            return f"patch does not apply to base_commit: {e}"
        finally:
            shutil.rmtree(work, ignore_errors=True)

    groups: dict[tuple, Instance] = {}
    for i in todo:
        groups.setdefault((i.local.repo_dir, i.base_commit, i.local.test_cmd), i)
    with tempfile.TemporaryDirectory(prefix="oec-validate.") as tmp, ThreadPoolExecutor(workers) as pool:
        gold = dict(zip(groups, pool.map(lambda i: run(i, None, Path(tmp)), groups.values())))
        bug = list(pool.map(lambda i: run(i, i.patch, Path(tmp)), todo))
    for i, bug_run in zip(todo, bug):
        gold_run = gold[(i.local.repo_dir, i.base_commit, i.local.test_cmd)]
        if isinstance(bug_run, str):
            problems[i.instance_id].append(bug_run)
            continue
        problems[i.instance_id] += [f"gold: {t} does not pass" for t in i.FAIL_TO_PASS + i.PASS_TO_PASS if t not in gold_run.passing()]
        problems[i.instance_id] += [f"bug: {t} passes" for t in i.FAIL_TO_PASS if t in bug_run.passing()]
    return problems


def validate_instance(instance: Instance, timeout: float = 300.0) -> list[str]:
    """The problems of one instance (empty: valid); see validate_instances."""
    return validate_instances([instance], timeout, workers=1)[instance.instance_id]
