"""The loop's per-step view of the history (agent/history.MessageCache) is the full recomputation's,
message for message and byte for byte, and its cost does not grow with the run.

The reference is the plain path the loop took before: to_messages(apply_processors(history)), recomputed
from scratch every step.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from sweagent_oec.agent.history import MessageCache, apply_processors, to_messages
from sweagent_oec.config import HistoryProcessorConfig
from sweagent_oec.data.trajectory import load_trajectory
from sweagent_oec.runner import run_instance
from tests.agent_helpers import replay_config, tinycalc, write_replay

LAST_N = [{"type": "last_n_observations", "n": 3}]
CACHE = [{"type": "cache_control", "last_n_messages": 2}]
PROCESSOR_SETS = [[], LAST_N, CACHE, LAST_N + CACHE, CACHE + LAST_N, [{"type": "last_n_observations", "n": 0}],
                  [{"type": "last_n_observations", "n": 1}, {"type": "cache_control", "last_n_messages": 4},
                   {"type": "last_n_observations", "n": 6}]]


def reference(history, processors):
    return to_messages(apply_processors(history, processors))


def random_item(rng: random.Random, i: int) -> dict:
    r = rng.random()
    if r < 0.35:
        tool_calls = [{"id": f"call_{i}", "type": "function", "function": {"name": "bash", "arguments": "{}"}}]
        return {"role": "assistant", "content": f"thought {i}", "thought": f"thought {i}", "action": "ls",
                "message_type": "action", "agent": "main", "model_role": rng.choice(["student", "expert", None]),
                "tool_calls": tool_calls if rng.random() < 0.5 else None}
    if r < 0.6:
        return {"role": "user", "content": "line\n" * rng.randint(0, 4), "message_type": "observation", "agent": "main"}
    if r < 0.8:
        return {"role": "tool", "content": f"out {i}\nmore", "message_type": "observation", "tool_call_ids": [f"call_{i}"]}
    if r < 0.9:
        return {"role": "user", "content": "a user note", "message_type": "user"}
    return {"role": "user", "content": [{"type": "text", "text": f"parts {i}"}], "message_type": "observation"}


@pytest.mark.parametrize("processors", PROCESSOR_SETS, ids=lambda p: "+".join(f"{x['type']}" for x in p) or "none")
def test_equal_to_the_full_recomputation_on_a_long_history(processors):
    configs = [HistoryProcessorConfig(**p) for p in processors]
    rng = random.Random(len(processors))
    history = [{"role": "system", "content": "sys", "message_type": "system_prompt", "agent": "main"},
               {"role": "user", "content": "the task\nin two lines", "message_type": "observation", "agent": "main"}]
    cache = MessageCache(configs)
    for step in range(300):
        history += [random_item(rng, step), random_item(rng, step)]  # in place, as the loop extends it
        got, want = cache(history), reference(history, configs)
        assert json.dumps(got) == json.dumps(want), f"step {step}"
    # Something was elided and something was marked where the processors ask for it: the test can fail.
    if processors == LAST_N + CACHE:
        assert any(str(m["content"]).startswith("Old environment output") for m in got)
        assert any(isinstance(m["content"], list) and "cache_control" in m["content"][0] for m in got)


def test_a_history_that_is_not_an_extension_starts_over():
    configs = [HistoryProcessorConfig(**p) for p in LAST_N + CACHE]
    rng = random.Random(7)
    cache = MessageCache(configs)
    history: list[dict] = []
    for step in range(300):
        change = rng.random()
        if change < 0.05:  # the conversation re-rendered (a switch): equal or different items, new objects
            history = [dict(item, content=f"re-rendered {k}") if rng.random() < 0.5 else dict(item)
                       for k, item in enumerate(history)]
        elif change < 0.08:
            history = history[: len(history) // 2]
        elif change < 0.1:
            history = [random_item(rng, step)] + history  # an item put in front
        history = history + [random_item(rng, step) for _ in range(rng.randint(0, 3))]
        assert json.dumps(cache(history)) == json.dumps(reference(history, configs)), f"step {step}"


def test_the_task_message_is_never_elided_even_when_its_decision_is_long_final():
    configs = [HistoryProcessorConfig(type="last_n_observations", n=1)]
    history = [{"role": "user", "content": "task", "message_type": "observation"}]
    cache = MessageCache(configs)
    for i in range(50):
        history = history + [{"role": "assistant", "content": "a"}, {"role": "user", "content": f"obs {i}\nx",
                                                                       "message_type": "observation"}]
        messages = cache(history)
    assert messages[0]["content"] == "task" and messages[-1]["content"] == "obs 49\nx"
    assert messages[2]["content"] == "Old environment output: (2 lines omitted)"
    assert messages == reference(history, configs)


def test_cost_per_step_does_not_grow_with_the_history():
    configs = [HistoryProcessorConfig(**p) for p in LAST_N + CACHE]
    rng = random.Random(3)
    history = [{"role": "user", "content": "task", "message_type": "observation"}]
    cache = MessageCache(configs)
    times = []
    for step in range(1200):
        history += [random_item(rng, step), random_item(rng, step)]
        started = time.perf_counter()
        cache(history)
        times.append(time.perf_counter() - started)
    early, late = sorted(times[20:120])[50], sorted(times[-100:])[50]
    full_started = time.perf_counter()
    reference(history, configs)
    full = time.perf_counter() - full_started
    # At 2,400 items the full recomputation costs ~100x an incremental step; allow a loaded machine slack.
    assert late < 10 * early + 1e-4 and late < full / 5, (early, late, full)


def test_every_step_query_of_a_real_run_equals_the_recomputation(tmp_path):
    """A 60-step run with both processors: each step's saved `query` is what the full recomputation
    sends for the history up to that step (the .traj is unchanged by the cache)."""
    steps = [{"thought": f"look {i}", "action": f"echo step {i}; seq {i % 4}"} for i in range(60)]
    steps.append({"thought": "done", "action": "submit"})
    config = replay_config(write_replay(tmp_path, steps), history_processors=LAST_N + CACHE)
    path, info = run_instance(config, tinycalc(tmp_path), tmp_path / "out")
    assert info["exit_status"] == "submitted"
    raw = json.loads(path.read_text())
    configs = [HistoryProcessorConfig(**p) for p in LAST_N + CACHE]
    history = raw["history"]
    assert len(raw["trajectory"]) == 61
    for k, step in enumerate(raw["trajectory"]):
        assert json.dumps(step["query"]) == json.dumps(reference(history[:2 + 2 * k], configs)), f"step {k}"
    assert load_trajectory(path).trajectory[-1].action == "submit"
