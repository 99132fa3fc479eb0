"""Pick the one task a `run` command names: an instance from a file, a local folder, or the bundled task."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sweagent_oec.errors import UserError
from sweagent_oec.tasks.instances import Instance, LocalTask


def _problem_text(problem_statement: str | None) -> str:
    if not problem_statement:
        raise UserError("--repo needs --problem-statement TEXT (or @FILE)")
    if problem_statement.startswith("@"):
        path = Path(problem_statement[1:])
        if not path.is_file():
            raise UserError(f"problem statement file {path} does not exist")
        return path.read_text()
    return problem_statement


def repo_instance(repo: Path, problem_statement: str | None) -> Instance:
    """A task on a local git repository at its current HEAD (uncommitted changes are not part of it)."""
    if not repo.is_dir():
        raise UserError(f"--repo {repo} is not a folder")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode != 0:
        raise UserError(f"--repo {repo} is not a git repository with a commit: run `git init && git add -A && git commit -m base` there first")
    return Instance(instance_id=repo.resolve().name, repo=repo.resolve().name, base_commit=head.stdout.strip(),
                    problem_statement=_problem_text(problem_statement), local=LocalTask(repo_dir=str(repo.resolve())))


def single_instance(instances: str | None, instance_id: str | None, repo: Path | None, problem_statement: str | None,
                    bundled: bool, scratch: Path, split: str | None = None) -> Instance:
    chosen = sum(bool(x) for x in (instances, repo, bundled))
    if chosen != 1:
        raise UserError("name exactly one task: --instances FILE --instance-id ID, --repo DIR -p TEXT, or --bundled")
    if bundled:
        from sweagent_oec.tasks.bundled import materialize_tinycalc

        return materialize_tinycalc(scratch)
    if repo:
        return repo_instance(repo, problem_statement)
    from sweagent_oec.tasks.instances import get_instance, load_instances

    loaded = load_instances(instances, split)
    if not instance_id:
        if len(loaded) != 1:
            raise UserError(f"{instances} holds {len(loaded)} instances: choose one with --instance-id")
        return loaded[0]
    return get_instance(loaded, instance_id, instances)
