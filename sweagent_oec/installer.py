"""Installing packages into a venv: with uv when it can be had, else with pip, under pip's own settings.

uv installs the same packages several times faster than pip (parallel downloads, unpacking and
bytecode compiling): vLLM's venv took 36 s instead of 100 s here (before compiling). uv does not read pip's configuration,
so the settings pip would use (pip.conf files and PIP_* variables, as `pip config list` reports them)
are handed to it, with pip's rule for several indexes (the best version across all of them); a
setting uv has no equivalent for, or a uv that cannot be installed, means pip installs instead.
Standard library only: the main job runs this before the toolkit's venv exists
(`python -m sweagent_oec.installer install --python VENV_PYTHON -- REQUIREMENT...`).
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sweagent_oec.errors import UserError
from sweagent_oec.secrets import redact

UV_PIN = "uv==0.13.9"
# pip settings that change only how pip talks, prints or finds its config: nothing to hand to uv.
_NOTHING_TO_HAND = {"timeout", "default-timeout", "disable-pip-version-check", "progress-bar", "quiet", "verbose",
             "retries", "root-user-action", "no-warn-script-location", "no-input", "break-system-packages",
             "no-color", "cache-dir", "log", "require-virtualenv", "user-agent", "config-file"}


def cache_dir() -> Path:
    return Path(os.environ.get("OEC_CACHE_DIR", Path.home() / ".cache" / "sweagent-oec"))


@contextlib.contextmanager
def cache_lock(name: str):
    """An exclusive lock on `cache_dir()/.name.lock` (released by the kernel when its holder dies, even by SIGKILL)."""
    path = cache_dir() / f".{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def run_logged(command: list, log_path: Path, what: str, env: dict | None = None) -> None:
    """Run a setup step with its output appended to `log_path`; a failure is one line with the log's tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # Index URLs from pip's settings may carry credentials (https://user:token@host): never into the log.
        log.write(f"$ {' '.join(redact(list(map(str, command))))}\n".encode())
        log.flush()
        started = time.monotonic()
        rc = subprocess.run(list(map(str, command)), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env).returncode
        log.write(f"# exit {rc} after {time.monotonic() - started:.1f} s\n".encode())
    if rc:
        raise UserError(f"{what} failed (exit {rc}); log {log_path}: {log_tail(log_path)}")


def log_tail(path: Path | str, lines: int = 8) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())[-1200:]


def pip_settings(python: Path | str) -> dict[str, str]:
    """The settings pip's install command runs with for `python`, from `pip config list` (which prints each
    file's merged [global] and [install] sections and the PIP_* variables: `global.find-links='/opt/wheels'`,
    `:env:.no-cache-dir='1'`): [install] over [global], the environment over both."""
    out = subprocess.run([str(python), "-m", "pip", "config", "list"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if out.returncode:
        raise OSError(f"pip config list failed: {out.stderr.strip()[-300:]}")
    rank = {"global": 0, "install": 1, ":env:": 2}  # other sections ([freeze], [download]...) are other commands'
    found: list[tuple[int, str, str]] = []
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        section, dot, name = key.rpartition(".")
        if not sep or not dot or section not in rank:
            continue
        try:
            value = str(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            raise OSError(f"cannot read pip's setting {line!r}") from None
        found.append((rank[section], name.replace("_", "-"), " ".join(value.split())))
    return {name: value for _, name, value in sorted(found, key=lambda item: item[0])}


def _yes(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def uv_command(settings: dict[str, str]) -> tuple[list[str], dict[str, str]] | None:
    """uv's arguments and environment for pip's `settings`; None when one of them has no uv equivalent."""
    args: list[str] = []
    env: dict[str, str] = {}
    for name, value in settings.items():
        if name in _NOTHING_TO_HAND:
            continue
        if name == "index-url":
            args += ["--index-url", value]
        elif name == "extra-index-url":
            for url in value.split():
                args += ["--extra-index-url", url]
        elif name == "find-links":
            for place in value.split():
                args += ["--find-links", place]
        elif name in ("constraint", "constraints"):
            for place in value.split():
                args += ["--constraint", place]
        elif name == "no-index":
            args += ["--no-index"] if _yes(value) else []
        elif name == "no-cache-dir":
            env["UV_NO_CACHE"] = "1" if _yes(value) else "0"
        elif name == "cert":
            env["SSL_CERT_FILE"] = value
        elif name == "pre":
            args += ["--prerelease", "allow"] if _yes(value) else []
        else:  # say, only-binary, no-binary, require-hashes, trusted-host: leave it to pip
            return None
    # pip takes the best version across every index; uv's default is the first index that has the package.
    return args + ["--index-strategy", "unsafe-best-match"], env


def uv_binary(log_path: Path) -> Path | None:
    """uv, installed once by this interpreter's pip into the cache; None when that cannot be done (no pip here, no
    registry, or OEC_NO_UV set)."""
    if os.environ.get("OEC_NO_UV"):
        return None
    folder = cache_dir() / UV_PIN.replace("==", "-")
    uv, stamp = folder / "bin" / "uv", folder / ".oec-installed"
    if stamp.exists():
        return uv
    try:
        with cache_lock(folder.name):
            if not stamp.exists():
                shutil.rmtree(folder, ignore_errors=True)  # a half-made one from a killed run
                run_logged([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target",
                            folder, UV_PIN], log_path, f"pip install {UV_PIN}")
                run_logged([uv, "--version"], log_path, "running uv")
                stamp.write_text(UV_PIN + "\n")
    except (UserError, OSError) as e:
        print(f"[installer] no uv ({str(e)[:200]}): pip installs instead", file=sys.stderr, flush=True)
        return None
    return uv


def uv_plan(log_path: Path) -> tuple[Path, list[str], dict[str, str]] | None:
    """(uv, its index arguments, its environment) when uv can install as pip would here; else None (pip installs).
    Decided once per venv and handed to `make_venv` and `install`: a venv uv made has no pip in it."""
    uv = uv_binary(log_path)
    if uv is None:
        return None
    try:
        translated = uv_command(pip_settings(sys.executable))
    except OSError as e:
        print(f"[installer] cannot read pip's settings ({e}): pip installs instead", file=sys.stderr, flush=True)
        return None
    if translated is None:
        print("[installer] pip's settings have no uv equivalent: pip installs instead", file=sys.stderr, flush=True)
        return None
    args, env = translated
    return uv, args, {**os.environ, **env, "UV_PYTHON_DOWNLOADS": "never"}


def make_venv(path: Path, log_path: Path, plan) -> None:
    """A venv of this interpreter at `path`: by uv (`plan`; no pip inside: uv installs into it) or, where uv cannot
    install, by `venv` with pip (seconds on a busy machine: ensurepip unpacks and compiles pip)."""
    if plan:
        run_logged([plan[0], "venv", "--quiet", "--python", sys.executable, path], log_path, f"making the venv {path}",
                   env=plan[2])
    else:
        run_logged([sys.executable, "-m", "venv", path], log_path, f"making the venv {path}")


def install(python: Path | str, requirements: list[str], log_path: Path, what: str, plan,
            exclude: tuple[str, ...] = ()) -> None:
    """`pip install requirements` into the venv of `python`, by uv when `plan` (`uv_plan`) says uv can do it as pip
    would, else by pip. Packages in `exclude` (dependencies the resolver adds that must not be there) are left out
    of the resolution by uv (never downloaded, unpacked or compiled) and uninstalled after the install by pip."""
    if plan:
        uv, args, env = plan
        excludes = []
        if exclude:
            excludes_file = log_path.with_name(log_path.name + ".excludes.txt")
            excludes_file.write_text("".join(f"{name}\n" for name in exclude))
            excludes = ["--excludes", excludes_file]
        # Bytecode compiled at install, as pip does (uv's default is not to): where PYTHONDONTWRITEBYTECODE is set
        # (this machine) nothing is ever compiled later, and vLLM's server took 90 s to start instead of 53.
        run_logged([uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", python, *args, *excludes,
                    *requirements], log_path, what, env=env)
    else:
        run_logged([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements], log_path, what)
        if exclude:
            run_logged([python, "-m", "pip", "uninstall", "-y", "-q", *exclude], log_path, f"removing {', '.join(exclude)}")


def main(argv: list[str]) -> int:
    """`python -m sweagent_oec.installer install --python PY [--log FILE] -- REQUIREMENT...` (scripts/bootstrap.sh)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sweagent_oec.installer")
    sub = parser.add_subparsers(dest="what", required=True)
    command = sub.add_parser("install")
    command.add_argument("--python", type=Path, required=True)
    command.add_argument("--log", type=Path)
    command.add_argument("requirements", nargs="+")
    args = parser.parse_args(argv)
    log_path = args.log or cache_dir() / "install.log"
    try:
        install(args.python, args.requirements, log_path, f"installing {' '.join(args.requirements)}", uv_plan(log_path))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
