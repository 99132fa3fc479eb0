"""No secret is ever written (issue 13 item 4): config redaction, scrubbing of known values, and a
scan of every file and log line a run and the later stages write."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweagent_oec import secrets
from sweagent_oec.config import build_config, redact_secrets
from tests.agent_helpers import SOLUTION, tinycalc
from tests.openai_server import OpenAIServer, Reply, tool_call

CLI = [sys.executable, "-m", "sweagent_oec.cli"]


# ---------------------------------------------------------------- what is secret


def test_secret_looking_keys():
    for key in ["api_key", "API_KEY", "apiKey", "x-api-key", "X-Api-Key", "Authorization", "proxy-authorization",
                "access_token", "HF_TOKEN", "client_secret", "db_password", "passwd", "auth", "Cookie", "apikey"]:
        assert secrets.is_secret_key(key), key
    for key in ["max_input_tokens", "price_per_million_tokens", "name", "api_base", "keep_source_git", "tokens_sent",
                "temperature", "env_variables", "extra_headers", "author"]:
        assert not secrets.is_secret_key(key), key


def test_redaction_keeps_references_and_blanks_literals_at_any_depth():
    data = {"agent": {"model": {
        "name": "switching", "max_input_tokens": 1000, "price_per_million_tokens": [3.0, 15.0],
        "models": [
            {"name": "openai/s", "api_key": "sk-literal-0123456789abcdef", "api_base": "http://127.0.0.1:1/v1",
             "completion_kwargs": {"extra_headers": {"Authorization": "Bearer abcdefghijklmnop", "X-Trace": "plain"}}},
            {"name": "anthropic/e", "api_key": "$ANTHROPIC_API_KEY",
             "completion_kwargs": {"extra_headers": {"x-api-key": "${EXPERT_KEY}"}}},
        ]}},
        "env": {"env_variables": {"GITHUB_TOKEN": "ghp_" + "a" * 36, "PLAIN": "value", "SHAPED": "sk-" + "b" * 40,
                                  "NESTED_SECRET": "$FROM_ENV"}}}
    red = redact_secrets(data)
    s, e = red["agent"]["model"]["models"]
    assert s["api_key"] == "***" and s["completion_kwargs"]["extra_headers"] == {"Authorization": "***", "X-Trace": "plain"}
    assert e["api_key"] == "$ANTHROPIC_API_KEY" and e["completion_kwargs"]["extra_headers"]["x-api-key"] == "${EXPERT_KEY}"
    assert red["agent"]["model"]["max_input_tokens"] == 1000 and red["agent"]["model"]["price_per_million_tokens"] == [3.0, 15.0]
    assert red["env"]["env_variables"] == {"GITHUB_TOKEN": "***", "PLAIN": "value", "SHAPED": "***", "NESTED_SECRET": "$FROM_ENV"}
    assert s["api_base"] == "http://127.0.0.1:1/v1" and data["agent"]["model"]["models"][0]["api_key"].startswith("sk-")


def test_credentials_inside_urls():
    data = {"api_base": "https://user:pw-0123456789@proxy.example/v1?key=AIzaQ1w2e3r4t5&alt=json",
            "local": "http://127.0.0.1:8000/v1", "docs": "https://host/x?page=2&access_token=tok-13572468"}
    assert redact_secrets(data) == {"api_base": "https://user:***@proxy.example/v1?key=***&alt=json",
                                    "local": "http://127.0.0.1:8000/v1", "docs": "https://host/x?page=2&access_token=***"}
    secrets.remember_config(data)
    assert secrets.scrub("sent pw-0123456789 and AIzaQ1w2e3r4t5 and tok-13572468") == "sent *** and *** and ***"


def test_resolved_secrets_are_remembered_and_scrubbed(monkeypatch):
    monkeypatch.setenv("SCRUB_TEST_REF", "ref-value-0123456789")
    build_config({"agent": {"model": {"name": "openai/x", "api_key": "$SCRUB_TEST_REF", "per_instance_cost_limit": 0,
                                      "completion_kwargs": {"extra_headers": {"Authorization": "Bearer lit-987654321"}}}},
                  "env": {"env_variables": {"SERVICE_PASSWORD": "pw-lit-24680"}}})
    text = "key ref-value-0123456789, header Bearer lit-987654321, pw pw-lit-24680, short abc"
    assert secrets.scrub(text) == "key ***, header ***, pw ***, short abc"
    assert secrets.scrub("only lit-987654321 alone") == "only *** alone"  # the key without its "Bearer"


def test_api_key_environment_variables_are_scrubbed_but_not_lookalikes(monkeypatch):
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", "provider-key-13579")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-but-long-value")
    monkeypatch.setenv("PWD", "/work/some/project")
    assert secrets.scrub("sent provider-key-13579") == "sent ***"
    assert secrets.scrub("false-but-long-value /work/some/project") == "false-but-long-value /work/some/project"


def test_every_log_record_is_scrubbed(monkeypatch):
    monkeypatch.setenv("LOGSCRUB_TOKEN", "log-secret-112233")
    secrets.install_log_scrubber()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("oec.test.scrub")
    logger.addHandler(handler)
    try:
        logger.warning("provider said: %s", "bad key log-secret-112233")
        try:
            raise RuntimeError("failed with log-secret-112233")
        except RuntimeError:
            logger.exception("call failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "log-secret-112233" not in out and "provider said: bad key ***" in out and "RuntimeError: failed with ***" in out


# ---------------------------------------------------------------- a run and every later stage, scanned

KEY_LIT = "sk-lit-7f3a9c2e5b1d4f6a8c0e"      # student api_key, literal in the config
KEY_REF = "sk-ref-2b4d6f8a0c1e3a5c7e9b"      # expert api_key, given as $OEC_SCAN_API_KEY
HDR_LIT = "hdrlit-5e7a9c1b3d5f7a9c"          # student Authorization header, literal ("Bearer ...")
HDR_REF = "hdrref-8c0e2a4c6e8a0c2e"          # expert X-Api-Key header, $OEC_SCAN_HDR_TOKEN
ENV_LIT = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"  # env.env_variables GITHUB_TOKEN, literal
ENV_PW = "envpw-3c5e7a9c1e3a5c7e"            # env.env_variables SERVICE_PASSWORD, literal
JUDGE_KEY = "sk-judge-4a6c8e0a2c4e6a8c"       # categorize's judge, from --judge-api-key-env
SECRETS = [KEY_LIT, KEY_REF, HDR_LIT, HDR_REF, ENV_LIT, ENV_PW, JUDGE_KEY]


def agent_server(actions: list[str]):
    """Student and expert solve tinycalc by tool calls. The first request gets a 500 that echoes the
    keys (retried), and the instance whose task says FAIL-ME gets a 401 that echoes them (exit_api)."""
    state = {"first": True}
    echo = f"Incorrect API key provided: {KEY_LIT} (Authorization: Bearer {HDR_LIT}; x-api-key {HDR_REF}; {KEY_REF})"

    def answer(request):
        text = json.dumps(request["messages"])
        if "FAIL-ME" in text:
            return Reply(status=401, error_message=echo)
        if state["first"]:
            state["first"] = False
            return Reply(status=500, error_message="upstream: " + echo)
        step = sum(m["role"] == "assistant" for m in request["messages"])
        action = actions[min(step, len(actions) - 1)]
        call = tool_call("submit", {}) if action == "submit" else tool_call("bash", {"command": action})
        return Reply(content=f"step {step}", tool_calls=[call])

    return OpenAIServer(answer)


def scan(root: Path, logs: list[str]) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.relative_to(root)}: {s}" for s in SECRETS if s.encode() in data]
    for i, log in enumerate(logs):
        found += [f"log {i}: {s}" for s in SECRETS if s in log]
    return found


def test_no_secret_in_any_output_or_log(tmp_path):
    """run-batch, eval, convert, categorize and view (`shift` too in the slow variant below)."""
    pipeline(tmp_path, n_solved=1, shift=False)


@pytest.mark.slow
def test_no_secret_in_any_output_or_log_with_shift(tmp_path):
    pipeline(tmp_path, n_solved=3, shift=True)  # shift needs 3 instances; it embeds for ~1.5 min on 2 busy cores


def pipeline(tmp_path: Path, n_solved: int, shift: bool) -> None:
    actions = [json.loads(line)["action"] for line in SOLUTION.read_text().splitlines() if line.strip()]
    base = tinycalc(tmp_path)
    instances = tmp_path / "instances.jsonl"
    rows = [{**base.model_dump(mode="json"), "instance_id": f"tiny-0{i}"} for i in [0, 2, 3][:n_solved]]
    rows.append({**base.model_dump(mode="json"), "instance_id": "tiny-01", "problem_statement": "FAIL-ME: " + base.problem_statement})
    instances.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "OEC_SCAN_API_KEY": KEY_REF, "OEC_SCAN_HDR_TOKEN": HDR_REF, "OEC_SCAN_JUDGE_KEY": JUDGE_KEY,
           "COLUMNS": "200"}
    out, logs = tmp_path / "out", []

    def run(*args):
        result = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        logs.append(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    with agent_server(actions) as server, OpenAIServer([Reply(status=500, error_message=f"judge key {JUDGE_KEY} rejected"),
                                                         Reply(content=json.dumps({"category": "other", "rationale": "r",
                                                                                   "confidence": 0.5}))]) as judge:
        common = {"api_base": server.url, "per_instance_cost_limit": 0, "retry": {"retries": 2, "min_wait": 0.01, "max_wait": 0.02}}
        student = {"name": "openai/student", "api_key": KEY_LIT, **common,
                   "completion_kwargs": {"extra_headers": {"Authorization": f"Bearer {HDR_LIT}"}}}
        expert = {"name": "openai/expert", "api_key": "$OEC_SCAN_API_KEY", **common,
                  "completion_kwargs": {"extra_headers": {"X-Api-Key": "$OEC_SCAN_HDR_TOKEN"}}}
        config = {"agent": {"model": {"name": "switching", "models": [student, expert],
                                      "switching_criteria": {"type": "step_count", "threshold": 2}}},
                  "env": {"env_variables": {"GITHUB_TOKEN": ENV_LIT, "SERVICE_PASSWORD": ENV_PW, "HDR": "$OEC_SCAN_HDR_TOKEN"}}}
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))

        run("run-batch", "-c", config_path, "-i", instances, "-o", out / "trajs", "--no-progress", "-w", "2")
        run("eval", "--instances", instances, "--predictions", out / "trajs" / "preds.json", "--run-id", "scan",
            "--output-dir", out / "logs")
        run("convert", out / "trajs", "--report", out / "logs" / "scan" / "report.json", "-o", out / "sft")
        run("categorize", out / "trajs", "--report", out / "logs" / "scan" / "report.json", "-o", out / "cat", "--all",
            "--judge-model", "openai/judge", "--judge-api-base", judge.url, "--judge-api-key-env", "OEC_SCAN_JUDGE_KEY",
            "--retry-backoff", "0.01", "--no-progress")
        assert len(judge.requests) >= 2  # the judge's echoing error was met and retried
    run("view", out / "trajs", "--report", out / "logs" / "scan", "--sft", out / "sft", "-o", out / "view")
    if shift:
        run("shift", "--set", f"expert={out / 'trajs'}", "--set", f"student={out / 'trajs'}", "--reference", "expert",
            "-o", out / "shift", "--min-instances", "3")

    # The run did what the scan needs: a solved instance, a provider error, every stage's outputs.
    solved = json.loads((out / "trajs" / "tiny-00" / "tiny-00.traj").read_text())
    failed = json.loads((out / "trajs" / "tiny-01" / "tiny-01.traj").read_text())
    assert solved["info"]["exit_status"] == "submitted" and failed["info"]["exit_status"] == "exit_api"
    assert "Incorrect API key provided: ***" in failed["info"]["exit_reason"]
    assert json.loads((out / "logs" / "scan" / "report.json").read_text())["resolved"] == n_solved
    assert (out / "sft" / "train.jsonl").read_text().strip()
    assert any((out / "cat").rglob("*.jsonl")) and (out / "view" / "view.html").exists()
    assert not shift or any((out / "shift").iterdir())
    # `$VAR` references are kept, literals redacted, in the config every trajectory carries.
    models = solved["replay_config"]["agent"]["model"]["models"]
    assert models[0]["api_key"] == "***" and models[1]["api_key"] == "$OEC_SCAN_API_KEY"
    assert models[0]["completion_kwargs"]["extra_headers"]["Authorization"] == "***"
    assert models[1]["completion_kwargs"]["extra_headers"]["X-Api-Key"] == "$OEC_SCAN_HDR_TOKEN"
    assert solved["replay_config"]["env"]["env_variables"] == {"GITHUB_TOKEN": "***", "SERVICE_PASSWORD": "***",
                                                               "HDR": "$OEC_SCAN_HDR_TOKEN"}
    assert any("retrying" in log for log in logs)  # the echoing 500 was logged, scrubbed

    assert scan(out, logs) == []


def test_a_secret_under_an_ordinary_name_or_echoed_by_a_command_never_reaches_the_trajectory(tmp_path):
    from sweagent_oec.data.trajectory import load_trajectory
    from sweagent_oec.runner import run_instance
    from tests.agent_helpers import write_replay

    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"
    api_key = "sk-known-to-the-process-0123456789"
    secrets.remember(api_key)
    replay = write_replay(tmp_path, [{"thought": "", "action": "echo FOO=$FOO"},
                                     {"thought": "", "action": f"echo {api_key[:10]}''{api_key[10:]}"},
                                     {"thought": "", "action": "submit"}])
    config = build_config({"agent": {"tools": {"parse_function": {"type": "function_calling"},
                                               "env_variables": {"FOO": token, "PLAIN": "visible-value"}},
                                     "model": {"name": "replay", "replay_path": str(replay)}}})
    path, info = run_instance(config, tinycalc(tmp_path), tmp_path / "out")
    text = path.read_text()
    assert token not in text and api_key not in text
    steps = load_trajectory(path).trajectory
    assert steps[0].observation.strip() == "FOO="  # never passed into the session
    assert steps[1].observation.strip() == secrets.REDACTED  # printed by a command, scrubbed before it is written
