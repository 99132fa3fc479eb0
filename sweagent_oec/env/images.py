"""`sweagent-oec images pull`: every image a set of instances needs, pulled up front with progress
and retries, so a batch never waits on (or fails at) a lazy pull inside a worker."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import docker
import tenacity

from sweagent_oec.env.docker import image_candidates, present_image
from sweagent_oec.env.runtime import EnvConfig
from sweagent_oec.tasks.instances import Instance

log = logging.getLogger(__name__)


@dataclass
class PullReport:
    present: list[str] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # image -> reason
    seconds: float = 0.0


def _transient(error: BaseException) -> bool:
    """A registry or engine hiccup (5xx, a dropped connection), not a missing image or refused access."""
    if isinstance(error, (docker.errors.ImageNotFound, docker.errors.NotFound)):
        return False
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status is None or status >= 500 or status == 429


def pull(client: docker.DockerClient, name: str, attempts: int = 3) -> None:
    """Pull one image, retrying transient failures with exponential back-off (tenacity)."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts), wait=tenacity.wait_exponential(multiplier=2, max=30),
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, docker.errors.DockerException) and _transient(e)),
        before_sleep=lambda state: log.warning("pulling %s failed (%s); retrying", name, state.outcome.exception()),
        reraise=True)
    retrying(client.images.pull, name)


def pull_images(client: docker.DockerClient, instances: list[Instance], config: EnvConfig, progress: bool = True) -> PullReport:
    """The best image of each instance: kept where the engine has one, else pulled (first candidate)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.monotonic()
    report, wanted = PullReport(), {}
    for instance in instances:
        candidates = image_candidates(instance, config)
        if candidates:
            have = present_image(client, candidates)
            wanted.setdefault(have or candidates[0], have is not None)
    report.present = sorted(name for name, have in wanted.items() if have)
    todo = sorted(name for name, have in wanted.items() if not have)
    columns = (TextColumn("pull {task.fields[image]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress or not todo, transient=False) as bar:
        task = bar.add_task("pull", total=len(todo), image="")
        for name in todo:
            bar.update(task, image=name)
            try:
                pull(client, name)
                report.pulled.append(name)
            except docker.errors.DockerException as e:
                report.failed[name] = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            bar.advance(task)
    report.seconds = time.monotonic() - started
    return report
