"""The embedded task set: shipped pre-validated data, its pins, first-use materialization and
(slow) revalidation that really runs the projects' tests."""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweagent_oec.errors import UserError
from sweagent_oec.tasks import embedded
from sweagent_oec.tasks.instances import diff_paths, load_instances
from sweagent_oec.tasks.synth import fetch_sdist


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "tasks", "embedded", *args], capture_output=True, text=True, timeout=timeout)


def test_cache_dir_from_env_or_home(monkeypatch, tmp_path):
    monkeypatch.setenv("OEC_CACHE_DIR", str(tmp_path / "c"))
    assert embedded.default_cache_dir() == tmp_path / "c" / "embedded"
    monkeypatch.delenv("OEC_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert embedded.default_cache_dir() == tmp_path / "home" / ".cache" / "sweagent-oec" / "embedded"


def test_bad_n():
    with pytest.raises(UserError, match="n must be >= 1"):
        embedded.embedded_instances(n=0)


def test_projects_are_pinned_by_hash():
    assert len({p.name for p in embedded.PROJECTS}) >= 2
    assert sum(p.max_instances for p in embedded.PROJECTS) >= embedded.MIN_INSTANCES
    for p in embedded.PROJECTS:
        assert len(p.sha256) == 64 and p.version and "/" in p.repo


def test_shipped_set_loads_fast_and_matches_the_pins():
    started = time.monotonic()
    instances = embedded.shipped_instances()
    assert time.monotonic() - started < 2.0
    manifest = embedded.shipped_manifest()
    assert manifest["recipe"] == embedded._recipe() and manifest["pytest"] == embedded.PYTEST
    assert len(instances) == manifest["count"] >= embedded.MIN_INSTANCES
    assert len({i.instance_id for i in instances}) == len(instances)
    counts = collections.Counter(i.repo for i in instances)
    assert set(counts) == {p.repo for p in embedded.PROJECTS} and min(counts.values()) >= 5
    assert {i.repo for i in instances[:2]} == set(counts)  # the first n cover both projects
    for p in embedded.PROJECTS:
        facts = manifest["projects"][p.name]
        assert (facts["version"], facts["sha256"], facts["repo"]) == (p.version, p.sha256, p.repo)
        assert embedded.PYTEST in facts["deps"] and facts["test_cmd"].startswith("python -m pytest -rA")
        assert embedded.PYTEST in facts["venv"] and all("==" in pin for pin in facts["venv"])  # every package pinned
    for i in instances:
        assert i.local is None  # no machine's paths in the package
        assert 1 <= len(i.FAIL_TO_PASS) <= embedded.MAX_FAIL_TO_PASS and i.PASS_TO_PASS
        assert not set(i.FAIL_TO_PASS) & set(i.PASS_TO_PASS)
        assert diff_paths(i.patch) and all(not p.startswith(("tests/", "/")) and ".." not in p for p in diff_paths(i.patch))
        assert i.problem_statement and i.FAIL_TO_PASS[0] in i.problem_statement
    # Package data: setuptools ships the folder (a package) with its JSON/JSONL.
    assert (embedded.SHIPPED_DIR / "__init__.py").exists()


def _shipped_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "shipped"
    shutil.copytree(embedded.SHIPPED_DIR, copy)
    return copy


def _edit_manifest(folder: Path, edit) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    edit(data)
    (folder / "manifest.json").write_text(json.dumps(data))


def test_shipped_data_for_other_pins_or_tampered_is_refused(tmp_path):
    folder = _shipped_copy(tmp_path)
    assert embedded.shipped_instances(folder) == embedded.shipped_instances()
    _edit_manifest(folder, lambda d: d["projects"]["tinydb"].update(sha256="0" * 64))
    with pytest.raises(UserError, match=r"validated against tinydb 4.8.2 \(sdist sha256 0000.*not the pinned .*--revalidate"):
        embedded.shipped_instances(folder)

    folder = _shipped_copy(tmp_path / "b")
    _edit_manifest(folder, lambda d: d.update(recipe="something-else"))
    with pytest.raises(UserError, match="made from recipe 'something-else'"):
        embedded.shipped_manifest(folder)

    folder = _shipped_copy(tmp_path / "c")
    _edit_manifest(folder, lambda d: d.update(count=d["count"] + 1))
    with pytest.raises(UserError, match="its manifest says"):
        embedded.shipped_instances(folder)

    folder = _shipped_copy(tmp_path / "d")  # a row moved to another base commit
    rows = (folder / "instances.jsonl").read_text().splitlines()
    row = json.loads(rows[0]) | {"base_commit": "f" * 40}
    (folder / "instances.jsonl").write_text("\n".join([json.dumps(row)] + rows[1:]) + "\n")
    with pytest.raises(UserError, match="is not one the manifest records"):
        embedded.shipped_instances(folder)

    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        embedded.shipped_manifest(folder)


def test_compare_names_every_difference_but_not_object_addresses():
    shipped = embedded.shipped_instances()[:3]
    assert embedded.compare(shipped, shipped) == []
    a, b, c = shipped
    same_but_addresses = a.model_copy(update={"problem_statement": a.problem_statement + "\nassert x in <Obj at 0x7f0813c7c7d0> 8729543990206"})
    shipped_a = a.model_copy(update={"problem_statement": a.problem_statement + "\nassert x in <Obj at 0x7f280aba2990> 8738124487614"})
    assert embedded.compare([shipped_a], [same_but_addresses]) == []
    reworded = a.model_copy(update={"problem_statement": a.problem_statement + " Please."})
    moved = b.model_copy(update={"FAIL_TO_PASS": b.FAIL_TO_PASS + b.PASS_TO_PASS[:1], "PASS_TO_PASS": b.PASS_TO_PASS[1:]})
    other_patch = c.model_copy(update={"instance_id": c.instance_id + "x"})
    differences = embedded.compare([a, b, c], [reworded, moved, other_patch])
    assert differences == sorted([
        f"{a.instance_id}: problem_statement differs",
        f"{b.instance_id}: FAIL_TO_PASS differs (only shipped: [], only rebuilt: {b.PASS_TO_PASS[:1]})",
        f"{b.instance_id}: PASS_TO_PASS differs (only shipped: {b.PASS_TO_PASS[:1]}, only rebuilt: [])",
        f"{c.instance_id}: shipped, not rebuilt", f"{c.instance_id}x: rebuilt, not shipped"])
    assert embedded.compare([a, b], [b, a]) == ["the same instances in another order"]


def test_sdist_with_the_wrong_hash_is_refused_and_removed(tmp_path):
    archive = tmp_path / "download" / "tinydb-4.8.2.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"not the real sdist")
    with pytest.raises(UserError, match="sha256 .* is not the pinned"):
        fetch_sdist("tinydb==4.8.2", tmp_path, sha256=embedded.PROJECTS[0].sha256)
    assert not archive.exists()
    with pytest.raises(UserError, match="not a PyPI pin"):
        fetch_sdist("tinydb", tmp_path)


def test_first_use_refuses_an_sdist_whose_hash_differs(tmp_path):
    cache = tmp_path / "embedded"
    for p in embedded.PROJECTS:  # what a tampered mirror would serve
        (cache / p.name / "download").mkdir(parents=True)
        (cache / p.name / "download" / f"{p.name}-{p.version}.tar.gz").write_bytes(b"evil " + p.name.encode())
    with pytest.raises(UserError, match="sha256 .* is not the pinned .* the download was removed"):
        embedded.embedded_instances(cache)
    assert not (cache / "instances.jsonl").exists() and not (cache / "manifest.json").exists()
    # The first refusal stops the rest (a project not yet checked keeps its archive, checked on next use).
    assert any(not list((cache / p.name / "download").iterdir()) for p in embedded.PROJECTS)
    assert not any((cache / p.name / "repo").exists() or (cache / p.name / "sdist").exists() for p in embedded.PROJECTS)
    assert not (cache / "venvs").exists() or not list((cache / "venvs").iterdir())  # nothing installed


def test_cli_revalidate_options_are_checked_before_any_work(tmp_path):
    done = cli("--ids", "x", "--cache-dir", str(tmp_path / "c"))
    assert done.returncode != 0 and "--ids and --update-shipped go with --revalidate" in done.stderr + done.stdout
    done = cli("--revalidate", "--ids", "no-such-instance", "--cache-dir", str(tmp_path / "c"))
    assert done.returncode != 0 and "no shipped embedded instance 'no-such-instance'" in done.stderr + done.stdout
    done = cli("--revalidate", "--ids", "x", "--update-shipped", "--cache-dir", str(tmp_path / "c"))
    assert done.returncode != 0 and "--update-shipped needs a full revalidation" in done.stderr + done.stdout


@pytest.mark.slow
def test_first_use_materializes_without_running_tests_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("OEC_CACHE_DIR", str(tmp_path))
    started = time.monotonic()
    instances = embedded.embedded_instances()
    first = time.monotonic() - started
    cache = tmp_path / "embedded"
    shipped = embedded.shipped_instances()
    assert [i.model_copy(update={"local": None}) for i in instances] == shipped
    for i in instances:
        assert Path(i.local.repo_dir, ".git").is_dir() and Path(i.local.venv, "bin", "python").exists()
        assert "pytest==9.2.0" in i.local.install_cmd and i.local.repo_dir.startswith(str(cache))
    for p in embedded.PROJECTS:  # the downloaded sdist is the pinned one; no test ran (no synthesis caches)
        [archive] = (cache / p.name / "download").iterdir()
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == p.sha256
        assert not (cache / p.name / "cache").exists()

    # Second call: read from the cache, nothing redone.
    mtime = (cache / "instances.jsonl").stat().st_mtime
    started = time.monotonic()
    again = embedded.embedded_instances()
    assert time.monotonic() - started < 2.0
    assert again == instances and (cache / "instances.jsonl").stat().st_mtime == mtime
    assert load_instances("embedded") == instances  # a source name every stage's --instances takes
    assert embedded.embedded_instances(n=3) == instances[:3]
    done = cli("--cache-dir", str(cache), "-n", "2")
    assert done.returncode == 0, done.stderr
    assert instances[0].instance_id[:30] in done.stdout
    print(f"embedded first use: {first:.0f} s")


@pytest.mark.slow
def test_revalidating_a_subset_really_runs_the_tests_and_reports_differences(tmp_path):
    shipped = embedded.shipped_instances()
    chosen = [next(i for i in shipped if i.repo == p.repo) for p in embedded.PROJECTS]
    # A shipped copy that lies about one instance: a passing test moved into FAIL_TO_PASS.
    folder = _shipped_copy(tmp_path)
    liar = chosen[0]
    rows = [json.loads(line) for line in (folder / "instances.jsonl").read_text().splitlines()]
    for row in rows:
        if row["instance_id"] == liar.instance_id:
            moved = row["PASS_TO_PASS"].pop(0)
            row["FAIL_TO_PASS"] = sorted(row["FAIL_TO_PASS"] + [moved])
    (folder / "instances.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    work = tmp_path / "work"
    differences = embedded.revalidate(work, [i.instance_id for i in chosen], shipped_dir=folder)
    assert len(differences) == 2, differences  # FAIL_TO_PASS and PASS_TO_PASS of the liar, nothing else
    assert all(d.startswith(f"{liar.instance_id}: ") for d in differences) and moved in differences[0] + differences[1]
    for p in embedded.PROJECTS:  # really run: the base suite twice and one bug run per chosen instance
        assert (work / p.name / "cache" / "baseline.json").exists()
        assert len(list((work / p.name / "cache").glob("*.json"))) == 2

    # The real shipped data holds for the same instances (the CLI, exit 0).
    done = cli("--revalidate", "--ids", ",".join(i.instance_id for i in chosen), "--cache-dir", str(tmp_path / "c" / "embedded"), timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the shipped data holds" in done.stdout


@pytest.mark.slow
def test_full_revalidation_rebuilds_the_shipped_set(tmp_path):
    """The builder from the pinned sdists (every candidate and validation run) gives the shipped data."""
    started = time.monotonic()
    assert embedded.revalidate(tmp_path / "work") == []
    print(f"embedded full revalidation: {time.monotonic() - started:.0f} s")
