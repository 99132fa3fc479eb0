"""The runtime contract (DESIGN section 6): one isolated working copy and a persistent bash in it.

Implementations: `env/local.py` (a private copy, sandboxed with bubblewrap where installed) and
`env/docker.py` (SWE-smith images through the docker SDK). The agent, the tools and the
evaluation harness only ever talk to this protocol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sweagent_oec import secrets

#: Marker appended when output is cut at the runtime's cap.
OUTPUT_CAPPED_MARKER = "\n<output capped at {limit} bytes: {dropped} bytes dropped>"

#: Environment variable names that are never passed into the agent's session.
SECRET_NAME = re.compile(r"(_API_KEY|_TOKEN|SECRET|PASSWORD|_KEY_ID|CREDENTIALS?)$|SECRET|^AWS_|^HF_TOKEN$", re.I)


def secret_variable(name: str, value: object) -> bool:
    """A variable that must not reach the agent's session: named like a secret, shaped like a
    provider key (`FOO: ghp_...`), or holding a secret this process knows (a resolved API key)."""
    text = str(value)
    return bool(SECRET_NAME.search(name) or secrets.is_secret_key(name) or secrets.looks_like_secret(text)
                or (len(text) >= secrets.MIN_SECRET_LENGTH and text.strip() in secrets.known_secrets()))


class RuntimeError_(Exception):
    """The environment itself failed (could not start, session died): exit_environment_error."""


@dataclass
class CommandResult:
    output: str
    exit_code: int | None  # None when the command timed out and was interrupted
    timed_out: bool = False
    duration: float = 0.0


@dataclass
class RuntimeInfo:
    """What goes into the trajectory's `environment` field: how the agent was confined."""

    type: str  # "local" | "docker"
    sandbox: str  # "bwrap" | "none" | "container"
    workdir: str  # the repo's path as the agent sees it
    notes: list[str] = field(default_factory=list)
    #: The process and memory limits in force and what enforces them (env/limits.py; docker: the engine).
    limits: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"type": self.type, "sandbox": self.sandbox, "workdir": self.workdir, "notes": list(self.notes),
                "limits": dict(self.limits)}


@runtime_checkable
class Runtime(Protocol):
    info: RuntimeInfo
    #: The commit the agent's diff is taken against (the task state).
    base_commit: str
    #: (git dir, ref) holding the original test files, when they are not in the task state.
    test_source: tuple[str, str] | None

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run `command` in the persistent session (cwd and exports persist between calls).

        On timeout the command is interrupted, `timed_out` is set, and the session stays usable.
        Output (stdout and stderr together) is capped with OUTPUT_CAPPED_MARKER.
        """
        ...

    def write_file(self, path: str, content: str) -> None:
        """Write a file inside the environment (path as the agent sees it)."""
        ...

    def read_file(self, path: str) -> str: ...

    def close(self) -> None:
        """Stop the session and kill everything started in it; idempotent."""
        ...


# ---------------------------------------------------------------- configuration

from typing import Literal  # noqa: E402

from pydantic import BaseModel, ConfigDict, Field, field_validator  # noqa: E402


class EnvConfig(BaseModel):
    """The `env:` section of a run config."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["local", "docker"] = "local"
    #: local: "auto" and "bwrap" need bubblewrap (the start fails without it); "none" runs unconfined,
    #: only when chosen explicitly (see env/README.md for what it still exposes).
    sandbox: Literal["auto", "bwrap", "none"] = "auto"
    #: Processes (and threads) the session may have at once; binds root (cgroup pids, docker pids_limit).
    max_processes: int | None = Field(default=1024, ge=16)
    #: Memory of everything in the session together, e.g. "8g"; None: no limit (cgroup memory, docker mem_limit).
    memory_limit: int | str | None = "8g"
    #: Allow network access from the session (local sandbox and docker).
    network: bool = False
    #: Cap on one command's output, in bytes; the rest is dropped with OUTPUT_CAPPED_MARKER.
    output_limit: int = 1_000_000
    #: Docker: image to start; derived from the instance (SWE-smith's naming) when unset.
    image_name: str | None = None
    #: Docker: engine socket, e.g. unix:///run/podman.sock; default from DOCKER_HOST.
    docker_host: str | None = None
    #: Commands run in the session after start-up, before the agent's first step.
    startup_commands: list[str] = Field(default_factory=list)
    #: Extra variables exported into the session.
    env_variables: dict[str, str] = Field(default_factory=dict)
    #: Docker: keep the image's own git history outside the repo (at SOURCE_GIT_DIR) so evaluation
    #: can restore test files the task's branch removed, as SWE-smith's branches remove the
    #: FAIL_TO_PASS tests. Evaluation only: in an agent's runtime it would show the fix.
    keep_source_git: bool = False
    #: Put the agent's tools (str_replace_editor) into the session; evaluation does not need them.
    install_tools: bool = True

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value):
        from sweagent_oec.env.limits import parse_size

        size = parse_size(value)
        if size is not None and size < 64 * 1024 * 1024:
            raise ValueError("memory_limit below 64m leaves no room for the shell and git")
        return value

    @property
    def memory_bytes(self) -> int | None:
        from sweagent_oec.env.limits import parse_size

        return parse_size(self.memory_limit)


#: Where a docker runtime keeps the image's git history when `keep_source_git` is set.
SOURCE_GIT_DIR = "/root/.oec_source.git"
