"""Interventions triggered by the student's behaviour: loops, malformed replies, a judge, any_of."""

import json

import pytest
from pydantic import ValidationError

from sweagent_oec.config import SwitchingCriteria, build_config
from sweagent_oec.data.trajectory import load_trajectory
from sweagent_oec.models.switching import draw_switch_step, parse_verdict
from sweagent_oec.runner import run_instance
from sweagent_oec.tasks.bundled import INSTANCE_ID
from tests.agent_helpers import SOLUTION, switching_config, tinycalc, write_replay
from tests.openai_server import OpenAIServer, Reply


def replay_side(path):
    return {"name": "replay", "replay_path": str(path), "tools": {"parse_function": {"type": "function_calling"}}}


def run(tmp_path, student_items, criteria, **model):
    student = write_replay(tmp_path, student_items, "student.jsonl")
    data = switching_config(replay_side(student), replay_side(SOLUTION), criteria, **model)
    path, info = run_instance(build_config(data), tinycalc(tmp_path), tmp_path / "out")
    return load_trajectory(path), json.loads(path.read_text())


def act(command):
    return {"thought": "", "action": command}


def test_looping_student_hands_over_after_its_first_repeated_action(tmp_path):
    items = [act("ls"), act("cat calc.py"), act("cat calc.py")] + [act("cat calc.py")] * 5
    traj, raw = run(tmp_path, items, {"type": "loop", "max_consecutive": 2, "cycle_repeats": 0, "max_total": 0})
    oec = traj.info.oec
    assert oec.switch_step == 3 and traj.roles()[:4] == ["student"] * 3 + ["expert"]
    trigger = raw["info"]["oec"]["trigger"]
    assert trigger["type"] == "loop" and "student step 2" in trigger["reason"] and "cat calc.py" in trigger["reason"]
    assert traj.info.exit_status == "submitted"


def test_student_that_does_not_loop_is_not_interrupted(tmp_path):
    items = [act(f"echo {i}") for i in range(3)] + [json.loads(line) for line in SOLUTION.read_text().splitlines() if line.strip()]
    traj, raw = run(tmp_path, items, {"type": "loop"})
    assert traj.info.oec.switch_step is None and set(traj.roles()) == {"student"} and raw["info"]["oec"]["trigger"] is None


def test_malformed_replies_in_a_row_hand_over(tmp_path):
    items = [act("ls"), "garbage 1", "garbage 2", act("echo never")]
    traj, raw = run(tmp_path, items, {"type": "format_errors", "threshold": 2})
    assert traj.info.oec.switch_step == 1 and raw["info"]["oec"]["trigger"]["type"] == "format_errors"
    # The malformed replies that triggered it are kept with the expert's first step.
    assert len(traj.trajectory[1].extra_info["format_errors"]) == 2


def judge_server(intervene_at: int):
    """A judge that reads how many steps it was shown and says intervene at `intervene_at`."""
    def handler(request):
        shown = request["messages"][-1]["content"].count("\nStep ")
        if shown >= intervene_at:
            return Reply(content=f"INTERVENE\nthe student has looked around for {shown} steps", prompt_tokens=100)
        return Reply(content="CONTINUE\nstill exploring sensibly", prompt_tokens=100)
    return OpenAIServer(handler)


def judge_criteria(server, every=1):
    return {"type": "judge", "every": every,
            "judge": {"name": "openai/judge", "api_base": server.url, "api_key": "sk-test-judge-0000", "retry": {"retries": 0},
                      "price_per_million_tokens": [1.0, 2.0]}}


def test_judge_that_says_intervene_at_step_4_hands_over_at_4(tmp_path):
    items = [act(f"echo {i}") for i in range(10)]
    with judge_server(4) as server:
        traj, raw = run(tmp_path, items, judge_criteria(server))
    oec = raw["info"]["oec"]
    assert oec["switch_step"] == 4 and oec["trigger"]["type"] == "judge" and "4 steps" in oec["trigger"]["reason"]
    verdicts = oec["triggers"]["judge_verdicts"]
    assert [v["verdict"] for v in verdicts] == ["continue"] * 3 + ["intervene"] and [v["step"] for v in verdicts] == [1, 2, 3, 4]
    assert len(server.requests) == 4  # once per review point, not once per query
    # The judge's calls and cost are its own: not in the student's or expert's stats.
    assert oec["triggers"]["judge_stats"]["api_calls"] == 4
    assert oec["triggers"]["judge_stats"]["instance_cost"] == pytest.approx(4 * (100 * 1.0 + 5 * 2.0) / 1e6)
    assert oec["model_stats"]["student"]["api_calls"] == 4
    assert "sk-test-judge-0000" not in json.dumps(raw)


def test_judge_every_k_steps(tmp_path):
    items = [act(f"echo {i}") for i in range(10)]
    with judge_server(3) as server:
        traj, raw = run(tmp_path, items, judge_criteria(server, every=2))
    assert raw["info"]["oec"]["switch_step"] == 4 and len(server.requests) == 2  # asked at 2 (continue) and 4


@pytest.mark.parametrize("seed", [2, 1, 0, 3, 15])  # draws 1, 2, 3, 4, 5 for this instance
def test_any_of_fires_at_whichever_comes_first(tmp_path, seed):
    # The student repeats itself at step 2, so the loop fires before the query of step 3; the
    # random range fires at the step drawn in [1, 5]. On a tie the first listed criterion wins.
    items = [act("ls"), act("cat calc.py")] + [act("cat calc.py")] * 6
    criteria = {"type": "any_of", "criteria": [{"type": "random_step_range", "start_step": 1, "end_step": 5},
                                                {"type": "loop", "max_consecutive": 2, "cycle_repeats": 0, "max_total": 0}]}
    traj, raw = run(tmp_path, items, criteria, seed=seed)
    drawn = draw_switch_step(seed, INSTANCE_ID, 1, 5)
    oec = raw["info"]["oec"]
    assert oec["switch_step"] == min(drawn, 3)
    assert oec["trigger"]["type"] == ("random_step_range" if drawn <= 3 else "loop")
    assert oec["triggers"]["criteria"][0]["drawn_threshold"] == drawn


def test_verdict_parsing():
    assert parse_verdict("INTERVENE\nstuck") == ("intervene", "stuck")
    assert parse_verdict("**Continue** - fine") == ("continue", "**Continue** - fine")
    verdict, reason = parse_verdict("I am not sure.")
    assert verdict == "continue" and "no verdict" in reason
    assert parse_verdict("")[0] == "continue"


def test_bad_trigger_configs_name_the_problem():
    with pytest.raises(ValidationError, match="judge needs"):
        SwitchingCriteria(type="judge", every=2)
    with pytest.raises(ValidationError, match="any_of needs"):
        SwitchingCriteria(type="any_of")
    with pytest.raises(ValidationError, match="format_errors needs"):
        SwitchingCriteria(type="format_errors")
    with pytest.raises(ValidationError, match="cannot draw k=4"):
        SwitchingCriteria(type="branches", k=4, start_step=0, end_step=2)
