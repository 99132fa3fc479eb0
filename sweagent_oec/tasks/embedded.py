"""The embedded task set: the default tasks, needing no Docker, shipped pre-validated with the package.

Two real projects from SWE-smith's repository list, whose sdists ship their tests and run them in
seconds, get procedural bugs (synth.py). The bugs and their FAIL_TO_PASS/PASS_TO_PASS lists are
data in this package (`embedded_data/`: `instances.jsonl` and `manifest.json`, which records the
exact project versions, sdist sha256, base commits, test command and the test venv's packages, each
pinned, they were validated against). First use only materializes them: download each sdist (sha256 checked), make
the base repository (its commit must be the recorded one) and the test venv; no test runs.

`revalidate()` (`sweagent-oec tasks embedded --revalidate`) rebuilds the set from the pins with the
builder (synthesis + validation, every test really run) and says what differs from the shipped data;
with `ids`, it recomputes only those instances' test lists. `build()` is the builder itself.

Cache folder: the `cache_dir` argument, else `$OEC_CACHE_DIR/embedded`, else
`~/.cache/sweagent-oec/embedded`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import zip_longest
from pathlib import Path

from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text
from sweagent_oec.tasks.instances import Instance, LocalTask, load_instances, write_instances_jsonl
from sweagent_oec.tasks.synth import (PASSING, SynthConfig, baseline, build_venv, make_base_repo, synthesize, test_candidate,
                                      test_deps, validate_instances)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedProject:
    name: str
    version: str
    sha256: str
    #: owner/name on GitHub, as in SWE-smith's ids.
    repo: str
    max_candidates: int
    max_instances: int


#: Measured in FACTS.md: both pass their whole suite in a fresh venv in ~1-3 s with pytest only.
PROJECTS = (
    EmbeddedProject("tinydb", "4.8.2", "f7dfc39b8d7fda7a1ca62a8dbb449ffd340a117c1206b68c50b1a481fb95181d", "msiemens/tinydb", 24, 12),
    EmbeddedProject("sqlparse", "0.5.2", "9e37b35e16d1cc652a2545f0997c1deb23ea28fa1f3eefe609eee3063c3b105f", "andialbrecht/sqlparse", 24, 12),
)
#: Pinned so that the set is the same on every machine (pytest 9.2 runs both suites).
PYTEST = "pytest==9.2.0"
SEED = 20240601
#: A bug that breaks more tests than this is too blunt to be a realistic task.
MAX_FAIL_TO_PASS = 20
TIMEOUT = 120.0
MIN_INSTANCES = 20
#: Bump when a change to synthesis or mutations should rebuild existing caches.
RECIPE_VERSION = 1
#: The shipped, pre-validated set.
SHIPPED_DIR = Path(__file__).parent / "embedded_data"
#: Instance fields compared by a revalidation (`local` holds this machine's paths: not compared).
COMPARED = ("repo", "patch", "FAIL_TO_PASS", "PASS_TO_PASS", "problem_statement", "base_commit", "created_at")


def default_cache_dir() -> Path:
    root = os.environ.get("OEC_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "sweagent-oec") / "embedded"


def _recipe() -> str:
    """What the set is made from (pins, seed, limits)."""
    return hashlib.sha256(json.dumps([RECIPE_VERSION, [asdict(p) for p in PROJECTS], PYTEST, SEED, MAX_FAIL_TO_PASS], sort_keys=True).encode()).hexdigest()[:16]


def _project_deps(repo: Path) -> list[str]:
    """The test venv's requirements, as synthesis computes them (synth.synthesize)."""
    deps = [PYTEST] + test_deps(repo)
    if not any(re.match(r"pytest\b(?!-)", d) for d in deps):
        deps.insert(0, "pytest")
    return deps


# --- the shipped data ----------------------------------------------------------------------------


def shipped_manifest(shipped_dir: Path = SHIPPED_DIR) -> dict:
    """The shipped manifest, checked against this module's pins: data validated against other
    project versions (or another recipe) is refused, never used."""
    try:
        manifest = json.loads((shipped_dir / "manifest.json").read_text())
        projects = manifest["projects"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"the shipped embedded set at {shipped_dir} is unreadable ({type(e).__name__}: {e}); reinstall sweagent-oec.") from None
    if manifest.get("recipe") != _recipe():
        raise UserError(f"the shipped embedded set was made from recipe {manifest.get('recipe')!r}, not this code's {_recipe()!r} "
                        "(pins or settings changed); run `sweagent-oec tasks embedded --revalidate --update-shipped`.")
    for p in PROJECTS:
        got = projects.get(p.name) or {}
        if (got.get("version"), got.get("sha256")) != (p.version, p.sha256):
            raise UserError(f"the shipped embedded set was validated against {p.name} {got.get('version')} (sdist sha256 {got.get('sha256')}), "
                            f"not the pinned {p.version} ({p.sha256}); run `sweagent-oec tasks embedded --revalidate --update-shipped`.")
    return manifest


def shipped_instances(shipped_dir: Path = SHIPPED_DIR) -> list[Instance]:
    """The shipped instances, without `local` (materialize() adds this machine's paths)."""
    manifest = shipped_manifest(shipped_dir)
    instances = load_instances(shipped_dir / "instances.jsonl")
    repos = {p.repo: p.name for p in PROJECTS}
    for i in instances:
        project = manifest["projects"].get(repos.get(i.repo, ""))
        if project is None or i.base_commit != project["base_commit"] or i.local is not None:
            raise UserError(f"shipped instance {i.instance_id}: repo {i.repo!r} / base_commit {i.base_commit!r} is not one the manifest "
                            "records (or it carries machine paths); reinstall sweagent-oec.")
    if len(instances) != manifest.get("count"):
        raise UserError(f"the shipped embedded set has {len(instances)} instances, its manifest says {manifest.get('count')}; reinstall sweagent-oec.")
    return instances


def _shipped_key(shipped_dir: Path = SHIPPED_DIR) -> str:
    """Identifies the shipped data: a cache materialized from other data is redone."""
    digest = hashlib.sha256()
    for name in ("manifest.json", "instances.jsonl"):
        digest.update((shipped_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def write_shipped(instances: list[Instance], projects: dict[str, dict], shipped_dir: Path = SHIPPED_DIR, build_seconds: float | None = None) -> None:
    """Record a validated set as the shipped data (instances without `local`, projects' facts in the manifest)."""
    shipped_dir.mkdir(parents=True, exist_ok=True)
    rows = [i.model_copy(update={"local": None}) for i in instances]
    write_instances_jsonl(shipped_dir / "instances.jsonl", rows)
    manifest = {"recipe": _recipe(), "count": len(rows), "pytest": PYTEST, "seed": SEED, "max_fail_to_pass": MAX_FAIL_TO_PASS,
                "projects": projects, "counts": {p.name: sum(i.repo == p.repo for i in rows) for p in PROJECTS},
                "build_seconds": build_seconds, "validated": time.strftime("%Y-%m-%d", time.gmtime())}
    atomic_write_text(shipped_dir / "manifest.json", json.dumps(manifest, indent=1) + "\n")


def _project_facts(instances: list[Instance]) -> dict[str, dict]:
    """Per project: pins and what its instances were validated with (base commit, test command, venv)."""
    facts = {}
    for p in PROJECTS:
        local = next(i for i in instances if i.repo == p.repo)
        repo = Path(local.local.repo_dir)
        facts[p.name] = {"version": p.version, "sha256": p.sha256, "repo": p.repo, "base_commit": local.base_commit,
                         "test_cmd": local.local.test_cmd, "env": local.local.env, "deps": _project_deps(repo),
                         "venv": _frozen(Path(local.local.venv))}
    return facts


def _frozen(venv: Path) -> list[str]:
    """Every package in a test venv, pinned (`pip list --format=freeze`)."""
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "list", "--format=freeze",
                           "--disable-pip-version-check"], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"could not list the packages of {venv}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return sorted(line for line in done.stdout.splitlines() if "==" in line)


# --- first use: materialize (no test runs) -------------------------------------------------------


def _download_sdist(p: EmbeddedProject, download: Path) -> None:
    """The project's sdist into `download`; synth.fetch_sdist then checks its sha256 and unpacks it.

    Straight from the index's simple API (PEP 691): `pip download` of an sdist first prepares its
    metadata in a fresh build environment, ~30-150 s on a busy machine for a 100 kB file. pip is the
    fallback (another index layout, a proxy it is configured for).
    """
    name = f"{p.name}-{p.version}.tar.gz"
    if (download / name).exists():
        return
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/") + f"/{p.name}/"
    try:
        request = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            url = next(f["url"] for f in json.load(response)["files"] if f["filename"] == name)
        download.mkdir(parents=True, exist_ok=True)
        partial = download / f".{name}.partial"
        with urllib.request.urlopen(urllib.parse.urljoin(index, url), timeout=120) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
        os.replace(partial, download / name)
        return
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as e:
        log.info("%s: no direct download from %s (%s); trying pip", name, index, e)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check", "--no-binary", p.name,
                           f"{p.name}=={p.version}", "-d", str(download)], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no archive"])[-1]
        raise UserError(f"could not download the sdist of {p.name}=={p.version}: {last}; PyPI must be reachable.")


def materialize(cache: Path, shipped_dir: Path = SHIPPED_DIR) -> list[Instance]:
    """Repos and venvs for the shipped instances under `cache`; writes `instances.jsonl` with their paths."""
    started = time.monotonic()
    manifest = shipped_manifest(shipped_dir)
    instances = shipped_instances(shipped_dir)

    # One venv per distinct set of pinned packages (both projects test with the same few).
    venv_of = {p.name: cache / "venvs" / hashlib.sha256("\n".join(manifest["projects"][p.name]["venv"]).encode()).hexdigest()[:12] for p in PROJECTS}
    pins = {venv_of[p.name]: manifest["projects"][p.name]["venv"] for p in PROJECTS}

    def repo(p: EmbeddedProject) -> Path:
        facts = manifest["projects"][p.name]
        out = cache / p.name
        out.mkdir(parents=True, exist_ok=True)
        _download_sdist(p, out / "download")
        repo, commit = make_base_repo(f"{p.name}=={p.version}", out, p.sha256)  # checks the archive's sha256
        if commit != facts["base_commit"]:
            raise UserError(f"{p.name} {p.version}: the base commit made here is {commit[:12]}, the shipped set was validated at "
                            f"{facts['base_commit'][:12]}; remove {out} and retry, or run `sweagent-oec tasks embedded --revalidate`.")
        deps = _project_deps(repo)
        if deps != facts["deps"]:
            raise UserError(f"{p.name}: the test requirements here {deps} differ from the validated {facts['deps']}; "
                            "run `sweagent-oec tasks embedded --revalidate`.")
        return repo

    (cache / "venvs").mkdir(parents=True, exist_ok=True)
    # Repositories first: a refused pin (sdist hash, base commit) stops everything before any install.
    with ThreadPoolExecutor(len(PROJECTS)) as pool:
        repos = dict(zip((p.name for p in PROJECTS), pool.map(repo, PROJECTS)))
    with ThreadPoolExecutor(len(pins)) as pool:  # the exact packages the set was validated with
        install = dict(zip(pins, pool.map(build_venv, pins, pins.values())))
    locals_ = {}
    for p in PROJECTS:
        facts, venv = manifest["projects"][p.name], venv_of[p.name]
        locals_[p.repo] = LocalTask(repo_dir=str(repos[p.name]), venv=str(venv), install_cmd=install[venv], test_cmd=facts["test_cmd"], env=facts["env"])
    ready = [i.model_copy(update={"local": locals_[i.repo]}) for i in instances]
    write_instances_jsonl(cache / "instances.jsonl", ready)
    seconds = time.monotonic() - started
    atomic_write_text(cache / "manifest.json", json.dumps({
        "shipped": _shipped_key(shipped_dir), "repos": sorted(t.repo_dir for t in locals_.values()), "venvs": sorted(map(str, pins)),
        "materialize_seconds": round(seconds, 1), "counts": manifest["counts"]}, indent=1))
    log.info("embedded set: %d shipped instances materialized in %.0f s at %s", len(ready), seconds, cache)
    return ready


def _usable(cache: Path) -> bool:
    manifest = cache / "manifest.json"
    if not (manifest.exists() and (cache / "instances.jsonl").exists()):
        return False
    try:
        data = json.loads(manifest.read_text())
    except ValueError:
        return False
    return (data.get("shipped") == _shipped_key() and all(Path(d, ".git").is_dir() for d in data.get("repos", []))
            and all(Path(v, ".oec-done").exists() for v in data.get("venvs", [])))


def embedded_instances_path(cache_dir: Path | str | None = None, workers: int = 2) -> Path:
    """The set's JSONL, materialized on first use (a lock keeps concurrent callers from doing it twice).

    `workers` is kept for callers of the builder era; materializing runs no tests."""
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if not _usable(cache):
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _usable(cache):  # another process may have done it while we waited
                materialize(cache)
    return cache / "instances.jsonl"


def embedded_instances(cache_dir: Path | str | None = None, n: int | None = None, workers: int = 2) -> list[Instance]:
    """The embedded instances (the first `n` when given), materialized on first use."""
    if n is not None and n < 1:
        raise UserError(f"n must be >= 1, got {n}.")
    instances = load_instances(embedded_instances_path(cache_dir, workers))
    return instances[:n] if n is not None else instances


# --- the builder, and revalidation against the shipped data --------------------------------------


def build(cache: Path, workers: int = 2) -> list[Instance]:
    """Synthesize and validate the set from the pinned sdists (every test really runs; resumable:
    synthesis caches every step under `cache`). Writes `cache/instances.jsonl`."""
    started = time.monotonic()
    def one(project: EmbeddedProject) -> list[Instance]:
        config = SynthConfig(
            max_candidates=project.max_candidates, max_instances=project.max_instances, workers=workers, timeout=TIMEOUT,
            seed=SEED, max_fail_to_pass=MAX_FAIL_TO_PASS, deps=(PYTEST,), repo_name=project.repo, sha256=project.sha256,
        )
        return synthesize(f"{project.name}=={project.version}", cache / project.name, config)

    # Projects side by side: downloads, venvs and baselines are serial steps that would leave a core idle.
    with ThreadPoolExecutor(len(PROJECTS)) as pool:
        per_project = list(pool.map(one, PROJECTS))
    # Round-robin over projects, so that the first n instances cover every project.
    instances = [i for row in zip_longest(*per_project) for i in row if i is not None]
    # Independent check of every instance: gold passes all its tests, the bug fails every FAIL_TO_PASS.
    problems = validate_instances(instances, TIMEOUT, workers)
    valid = [i for i in instances if not problems[i.instance_id]]
    for instance in instances:
        if problems[instance.instance_id]:
            log.warning("dropped %s: %s", instance.instance_id, "; ".join(problems[instance.instance_id][:3]))
    if len(valid) < MIN_INSTANCES:
        raise UserError(f"the embedded set has only {len(valid)} valid instances (< {MIN_INSTANCES}); see the log, remove {cache} and retry.")
    write_instances_jsonl(cache / "instances.jsonl", valid)
    atomic_write_text(cache / "build.json", json.dumps({"recipe": _recipe(), "build_seconds": round(time.monotonic() - started, 1)}))
    log.info("embedded set: %d instances built in %.0f s at %s", len(valid), time.monotonic() - started, cache)
    return valid


#: In problem statements (pytest's messages), what changes from run to run: object addresses and ids/hashes.
_VOLATILE = re.compile(r"0x[0-9a-fA-F]{6,}|\b\d{10,}\b")


def _comparable(name: str, value):
    return _VOLATILE.sub("#", value) if name == "problem_statement" else value


def compare(shipped: list[Instance], rebuilt: list[Instance]) -> list[str]:
    """What differs between the shipped instances and a rebuild, one line each (empty: the same).
    Problem statements are compared without object addresses and id-like numbers (they vary per run)."""
    differences = []
    old, new = {i.instance_id: i for i in shipped}, {i.instance_id: i for i in rebuilt}
    differences += [f"{iid}: shipped, not rebuilt" for iid in old if iid not in new]
    differences += [f"{iid}: rebuilt, not shipped" for iid in new if iid not in old]
    for iid in old.keys() & new.keys():
        for name in COMPARED:
            a, b = getattr(old[iid], name), getattr(new[iid], name)
            if _comparable(name, a) != _comparable(name, b):
                if isinstance(a, list):
                    gone, added = sorted(set(a) - set(b)), sorted(set(b) - set(a))
                    differences.append(f"{iid}: {name} differs (only shipped: {gone[:5]}, only rebuilt: {added[:5]})")
                else:
                    differences.append(f"{iid}: {name} differs")
    if not differences and [i.instance_id for i in shipped] != [i.instance_id for i in rebuilt]:
        differences.append("the same instances in another order")
    return sorted(differences)


def _recheck(work: Path, chosen: list[Instance], workers: int, shipped_dir: Path = SHIPPED_DIR) -> list[Instance]:
    """The chosen shipped instances with their test lists recomputed as the builder does: the base
    suite run twice (tests passing both times), then the suite with the bug applied."""
    ready = {i.instance_id: i for i in materialize(work, shipped_dir)}
    rebuilt = []
    for p in PROJECTS:
        mine = [ready[i.instance_id] for i in chosen if i.repo == p.repo]
        if not mine:
            continue
        local, commit = mine[0].local, mine[0].base_commit
        repo, cache, scratch = Path(local.repo_dir), work / p.name / "cache", work / p.name / ".scratch"
        cache.mkdir(exist_ok=True)
        scratch.mkdir(exist_ok=True)
        passing = baseline(repo, commit, local, cache, scratch, TIMEOUT)
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda i: test_candidate(repo, commit, local, i.patch, cache, scratch, TIMEOUT), mine))
        for instance, result in zip(mine, results):
            now = {t for t, s in result["statuses"].items() if s in PASSING}
            f2p, p2p = ([], []) if result["timed_out"] else (sorted(passing - now), sorted(passing & now))
            rebuilt.append(instance.model_copy(update={"FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p}))
    order = {i.instance_id: n for n, i in enumerate(chosen)}
    return sorted(rebuilt, key=lambda i: order[i.instance_id])


def revalidate(work: Path, ids: list[str] | None = None, workers: int = 2, update_shipped: bool = False,
               shipped_dir: Path = SHIPPED_DIR) -> list[str]:
    """Rebuild from the pins in a fresh `work` folder and compare with the shipped data: the
    differences, one line each (empty: the shipped data holds). With `ids`, only those instances'
    FAIL_TO_PASS/PASS_TO_PASS are recomputed (the rest is not checked). `update_shipped` writes a
    full rebuild as the new shipped data (for maintainers, after a change of pins)."""
    if update_shipped and ids:
        raise UserError("--update-shipped needs a full revalidation (no --ids).")
    shutil.rmtree(work, ignore_errors=True)  # fresh: nothing cached from an earlier run is reused
    work.mkdir(parents=True)
    if update_shipped:
        started = time.monotonic()
        rebuilt = build(work, workers)
        try:
            differences = compare(load_instances(shipped_dir / "instances.jsonl"), rebuilt)
        except (UserError, OSError):
            differences = ["no readable shipped data"]
        write_shipped(rebuilt, _project_facts(rebuilt), shipped_dir, round(time.monotonic() - started, 1))
        return differences
    shipped = shipped_instances(shipped_dir)
    if ids:
        known = {i.instance_id for i in shipped}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise UserError(f"no shipped embedded instance {unknown[0]!r}; `sweagent-oec tasks embedded` lists them.")
        chosen = [i for i in shipped if i.instance_id in set(ids)]
        return compare(chosen, _recheck(work, chosen, workers, shipped_dir))
    rebuilt = build(work, workers)
    manifest = shipped_manifest(shipped_dir)
    differences = compare(shipped, rebuilt)
    for name, facts in _project_facts(rebuilt).items():
        for key, value in facts.items():
            if manifest["projects"][name].get(key) != value:
                differences.append(f"{name}: {key} differs (shipped {manifest['projects'][name].get(key)!r}, rebuilt {value!r})")
    return differences
