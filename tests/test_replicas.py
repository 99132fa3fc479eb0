"""A student served by several replicas behind one `api_base` list: spread by litellm's Router, with failover."""

import threading
import time

import pytest
from pydantic import ValidationError

from sweagent_oec.batch import BatchRun
from sweagent_oec.config import ModelConfig, build_config
from sweagent_oec.data.trajectory import find_trajectories, load_trajectory
from tests.agent_helpers import tinycalc
from tests.openai_server import OpenAIServer, Reply, tool_call


def student(delay=0.0):
    def handler(request):
        step = sum(m["role"] == "assistant" for m in request["messages"])
        call = tool_call("submit", {}) if step >= 3 else tool_call("bash", {"command": f"echo {step}"})
        return Reply(content="", tool_calls=[call], delay=delay)
    return OpenAIServer(handler)


def config(urls):
    return build_config({"agent": {"tools": {"parse_function": {"type": "function_calling"}},
                                   "model": {"name": "openai/student", "api_base": urls, "api_key": "k",
                                             "per_instance_cost_limit": 0, "total_cost_limit": 0,
                                             "retry": {"retries": 4, "min_wait": 0.05, "max_wait": 0.2}}}})


def instances(tmp_path, n):
    base = tinycalc(tmp_path)
    return [base.model_copy(update={"instance_id": f"tiny-{i:02d}"}) for i in range(n)]


def test_requests_are_spread_over_both_replicas_and_each_step_says_which(tmp_path):
    with student() as a, student() as b:
        state = BatchRun(config([a.url, b.url]), instances(tmp_path, 6), tmp_path / "out", num_workers=3).run(progress=False)
        assert state.counts() == {"submitted": 6}
        assert len(a.requests) > 3 and len(b.requests) > 3 and len(a.requests) + len(b.requests) == 6 * 4
        answered = {s.extra_info["api_base"] for p in find_trajectories(tmp_path / "out") for s in load_trajectory(p).trajectory}
        assert answered == {a.url, b.url}


def test_a_replica_that_dies_mid_batch_loses_no_instance(tmp_path):
    at_kill = {}

    def kill_b_after_it_served_some(a, b):
        while len(b.requests) < 4:
            time.sleep(0.01)
        b.__exit__(None, None, None)
        at_kill.update(a=len(a.requests), b=len(b.requests))

    with student(delay=0.05) as a:
        b = student(delay=0.05).__enter__()
        killer = threading.Thread(target=kill_b_after_it_served_some, args=(a, b), daemon=True)
        killer.start()
        state = BatchRun(config([a.url, b.url]), instances(tmp_path, 8), tmp_path / "out", num_workers=4).run(progress=False)
        killer.join(timeout=5)
        assert state.counts() == {"submitted": 8}  # no instance lost
        assert at_kill and len(a.requests) > at_kill["a"]  # the live replica took over


def test_replica_lists_are_checked():
    assert ModelConfig(name="m", api_bases=["http://x/v1", "http://y/v1"]).api_base is None
    assert ModelConfig(name="m", api_base=["http://x/v1", "http://y/v1"]).api_bases == ["http://x/v1", "http://y/v1"]
    with pytest.raises(ValidationError, match="twice"):
        ModelConfig(name="m", api_bases=["http://x/v1", "http://x/v1"])
    with pytest.raises(ValidationError, match="not both"):
        ModelConfig(name="m", api_base="http://x/v1", api_bases=["http://y/v1"])
