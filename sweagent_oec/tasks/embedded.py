"""The embedded task set: the default tasks, needing no Docker, built once from pinned PyPI sdists.

Two real projects from SWE-smith's repository list, whose sdists ship their tests and run them in
seconds, get procedural bugs (synth.py). The first call builds everything under the cache folder
(download with a sha256 check, venvs, baselines, candidates; each instance validated by running
its tests at gold and bug state); later calls only read `instances.jsonl`.

Cache folder: the `cache_dir` argument, else `$OEC_CACHE_DIR/embedded`, else
`~/.cache/sweagent-oec/embedded`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import zip_longest
from pathlib import Path

from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text
from sweagent_oec.tasks.instances import Instance, load_instances, write_instances_jsonl
from sweagent_oec.tasks.synth import SynthConfig, synthesize, validate_instances

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


def default_cache_dir() -> Path:
    root = os.environ.get("OEC_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "sweagent-oec") / "embedded"


def _recipe() -> str:
    """What the set is made from; a cache made from another recipe is rebuilt."""
    return hashlib.sha256(json.dumps([RECIPE_VERSION, [asdict(p) for p in PROJECTS], PYTEST, SEED, MAX_FAIL_TO_PASS], sort_keys=True).encode()).hexdigest()[:16]


def _usable(cache: Path) -> bool:
    manifest = cache / "manifest.json"
    if not (manifest.exists() and (cache / "instances.jsonl").exists()):
        return False
    data = json.loads(manifest.read_text())
    return data.get("recipe") == _recipe() and all(Path(d).is_dir() for d in data.get("repos", []))


def build(cache: Path, workers: int = 2) -> list[Instance]:
    """Synthesize, validate and write the set (resumable: synthesis caches every step under `cache`)."""
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
    seconds = time.monotonic() - started
    manifest = {"recipe": _recipe(), "repos": sorted({i.local.repo_dir for i in valid}), "build_seconds": round(seconds, 1),
                "counts": {p.name: sum(i.repo == p.repo for i in valid) for p in PROJECTS}}
    atomic_write_text(cache / "manifest.json", json.dumps(manifest, indent=1))
    log.info("embedded set: %d instances in %.0f s at %s", len(valid), seconds, cache)
    return valid


def embedded_instances_path(cache_dir: Path | str | None = None, workers: int = 2) -> Path:
    """The set's JSONL, built on first use (a lock keeps concurrent callers from building twice)."""
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if not _usable(cache):
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _usable(cache):  # another process may have built it while we waited
                build(cache, workers)
    return cache / "instances.jsonl"


def embedded_instances(cache_dir: Path | str | None = None, n: int | None = None, workers: int = 2) -> list[Instance]:
    """The embedded instances (the first `n` when given), building the set on first use."""
    if n is not None and n < 1:
        raise UserError(f"n must be >= 1, got {n}.")
    instances = load_instances(embedded_instances_path(cache_dir, workers))
    return instances[:n] if n is not None else instances
