import pytest
import yaml

from sweagent_oec.config import load_config
from sweagent_oec.errors import UserError

BASE = {"agent": {"model": {"name": "openai/gpt-4o-mini", "api_key": "$OEC_TEST_KEY", "temperature": 0.0}}}


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_files_merge_in_order_and_overrides_win(tmp_path, monkeypatch):
    monkeypatch.setenv("OEC_TEST_KEY", "sk-secret-value")
    a = write(tmp_path, "a.yaml", BASE)
    b = write(tmp_path, "b.yaml", {"agent": {"model": {"temperature": 0.7}, "tools": {"execution_timeout": 5}}})
    config = load_config([a, b], ["agent.model.per_instance_call_limit=75", "env.network=true"])
    assert config.agent.model.temperature == 0.7
    assert config.agent.tools.execution_timeout == 5
    assert config.agent.model.per_instance_call_limit == 75
    assert config.env.network is True
    assert config.agent.model.api_key.get_secret_value() == "sk-secret-value"
    # What may be written to disk keeps the reference, never the value.
    assert config.raw["agent"]["model"]["api_key"] == "$OEC_TEST_KEY"
    assert "sk-secret-value" not in repr(config)


def test_literal_keys_are_redacted_in_raw(tmp_path):
    path = write(tmp_path, "c.yaml", {"agent": {"model": {"name": "openai/x", "api_key": "sk-literal"}}})
    assert load_config([path]).raw["agent"]["model"]["api_key"] == "***"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"agent": {"model": {"name": "x", "temprature": 1}}}, "unknown config key agent.model.temprature"),
        ({"agent": {"model": {"name": "x", "temperature": "hot"}}}, "agent.model.temperature"),
        ({"agent": {"model": {"name": "x", "api_key": "$OEC_MISSING_VAR"}}}, "$OEC_MISSING_VAR, which is not set"),
        ({"agent": {}}, "config key agent.model is required"),
        ({"agent": {"model": {"name": "switching", "models": [{"name": "a"}]}}}, "exactly two"),
        ({"agent": {"model": {"name": "switching", "models": [{"name": "a"}, {"name": "b"}],
                              "switching_criteria": {"type": "random_step_range", "start_step": 5, "end_step": 2}}}},
         "start_step <= end_step"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, monkeypatch, data, message):
    monkeypatch.delenv("OEC_MISSING_VAR", raising=False)
    with pytest.raises(UserError) as err:
        load_config([write(tmp_path, "bad.yaml", data)])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config([tmp_path / "nope.yaml"])
    with pytest.raises(UserError, match="key.path=value"):
        load_config([write(tmp_path, "a.yaml", {"agent": {"model": {"name": "x"}}})], ["novalue"])


def test_shipped_configs_load(monkeypatch):
    from pathlib import Path

    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "STUDENT_API_BASE", "OEC_STUDENT_API_BASE"):
        monkeypatch.setenv(name, "test")
    configs = sorted(Path(__file__).parent.parent.joinpath("config").glob("*.yaml"))
    for path in configs:
        model = load_config([path]).agent.model
        for sub in model.models or [model]:  # the files they name exist, wherever the command runs
            for key in ("replay_path", "grammar_file", "litellm_model_registry"):
                if getattr(sub, key):
                    assert Path(getattr(sub, key)).is_file(), (path.name, key)


# ---------------------------------------------------------------- SWE-agent's config forms

SWE_AGENT_YAML = """
# Written for this test in SWE-agent 1.x's schema, with the OEC fork's switching keys.
agent:
  type: default
  templates:
    system_template: You fix bugs in Python repositories.
    instance_template: "Fix this: {{problem_statement}}"
    next_step_template: "OBSERVATION:\\n{{observation}}"
    next_step_no_output_template: No output.
    max_observation_length: 70000
    command_cancelled_timeout_template: "'{{command}}' took over {{timeout}} s and was stopped."
    demonstrations: []
    put_demos_in_history: false
  tools:
    env_variables:
      PAGER: cat
      GIT_PAGER: cat
    bundles:
      - path: tools/registry
      - path: tools/edit_anthropic
      - path: tools/review_on_submit_m
    registry_variables:
      USE_FILEMAP: 'true'
    enable_bash_tool: true
    submit_command: submit
    parse_function:
      type: function_calling
    execution_timeout: 300
  history_processors:
    - type: default
    - type: cache_control
      last_n_messages: 2
  model:
    name: switching
    seed: 7
    switching_criteria:
      type: random_step_range
      start_step: 0
      end_step: 30
    models:
      - name: hosted_vllm/my-student
        api_base: http://127.0.0.1:9/v1
        per_instance_cost_limit: 0
        total_cost_limit: 0
        per_instance_call_limit: 75
        top_p: 0.95
        temperature: 0.7
        max_output_tokens: 4096
        completion_kwargs:
          extra_body:
            top_k: 20
        delay: 0.0
        fallbacks: []
        choose_api_key_by_thread: true
        tools:
          bundles:
            - path: tools/registry
            - tools/edit_anthropic
            - path: tools/submit
          parse_function:
            type: xml_function_calling
        history_processors:
          - type: last_n_observations
            n: 5
      - name: anthropic/claude-3-7-sonnet-20250219
        api_key: $OEC_TEST_KEY
        per_instance_cost_limit: 2.0
        total_cost_limit: 3000.0
        max_output_tokens: 64000
        retry:
          retries: 20
          min_wait: 10
          max_wait: 120
"""


def test_a_swe_agent_config_loads_as_is(tmp_path, monkeypatch):
    monkeypatch.setenv("OEC_TEST_KEY", "sk-test")
    path = tmp_path / "swe_agent.yaml"
    path.write_text(SWE_AGENT_YAML)
    config = load_config([path])
    agent = config.agent
    assert agent.tools.bundles == ["tools/registry", "tools/edit_anthropic", "tools/review_on_submit_m"]
    assert agent.tools.registry_variables == {"USE_FILEMAP": "true"} and agent.tools.enable_bash_tool
    assert agent.templates.max_observation_length == 70000
    assert agent.templates.command_timeout_template.startswith("'{{command}}' took over")
    assert [p.type for p in agent.history_processors] == ["cache_control"]  # SWE-agent's no-op `default` dropped
    student, expert = agent.model.models
    assert student.tools.bundles == ["tools/registry", "tools/edit_anthropic", "tools/submit"]
    assert (student.top_p, student.max_output_tokens, student.completion_kwargs) == (0.95, 4096, {"extra_body": {"top_k": 20}})
    assert expert.max_output_tokens == 64000 and expert.total_cost_limit == 3000.0
    assert agent.model.switching_criteria.end_step == 30 and agent.model.seed == 7
    # What gets written into trajectories is what the file said.
    assert config.raw["agent"]["tools"]["bundles"][0] == {"path": "tools/registry"}


def test_three_unknown_keys_are_named_at_once(tmp_path):
    data = yaml.safe_load(SWE_AGENT_YAML)
    data["agent"]["tools"]["bundels"] = []
    data["agent"]["model"]["models"][0]["temprature"] = 0.1
    data["agent"]["templates"]["system_templat"] = "x"
    path = write(tmp_path, "bad.yaml", data)
    with pytest.raises(UserError) as err:
        load_config([path])  # $OEC_TEST_KEY is unset too: a fourth error, in the same line
    message = str(err.value)
    assert message.startswith("4 config errors: ") and "\n" not in message
    for key in ("agent.tools.bundels", "agent.model.models.0.temprature", "agent.templates.system_templat"):
        assert f"unknown config key {key}" in message
    assert "$OEC_TEST_KEY, which is not set" in message


def test_swe_agent_keys_that_cannot_be_honoured_are_errors_naming_key_and_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("OEC_TEST_KEY", "sk-test")
    data = yaml.safe_load(SWE_AGENT_YAML)
    data["num_workers"] = 8
    data["agent"]["templates"]["demonstrations"] = ["trajectories/demo.traj"]
    data["agent"]["model"]["models"][0]["fallbacks"] = [{"model": "openai/gpt-4o"}]
    data["agent"]["model"]["models"][1]["delay"] = 2.0
    data["agent"]["tools"]["bundles"][0]["hidden_tools"] = ["registry_get"]
    with pytest.raises(UserError) as err:
        load_config([write(tmp_path, "c.yaml", data)])
    message = str(err.value)
    assert message.startswith("5 config errors: ")
    assert "<top>.num_workers: give it on the command line (run-batch -w/--workers)" in message
    assert "agent.templates.demonstrations: demonstrations are not supported" in message
    assert "agent.model.models.0.fallbacks: fallback models are not supported" in message
    assert "agent.model.models.1.delay: a minimum delay between queries is not supported" in message
    assert "agent.tools.bundles.0.hidden_tools: hiding a bundle's tools is not supported" in message


def test_unknown_bundle_mapping_keys_and_both_timeout_template_names_are_errors(tmp_path):
    data = {"agent": {"model": {"name": "replay", "replay_path": "x.jsonl"},
                      "tools": {"bundles": [{"path": "tools/registry", "pth": "x"}]},
                      "templates": {"command_cancelled_timeout_template": "a", "command_timeout_template": "b"}}}
    with pytest.raises(UserError) as err:
        load_config([write(tmp_path, "c.yaml", data)])
    assert "unknown config key agent.tools.bundles.0.pth" in str(err.value)
    assert "command_cancelled_timeout_template and agent.templates.command_timeout_template are the same setting" in str(err.value)


def test_overrides_address_list_elements(tmp_path, monkeypatch):
    monkeypatch.setenv("OEC_TEST_KEY", "sk-test")
    path = tmp_path / "c.yaml"
    path.write_text(SWE_AGENT_YAML)
    config = load_config([path], ["agent.model.models.0.name=hosted_vllm//ckpt/round-2",
                                  "agent.model.models.0.api_base=http://127.0.0.1:8001/v1",
                                  "agent.model.models.-1.per_instance_cost_limit=0.5",
                                  "agent.model.models.0.tools.bundles.2=tools/review_on_submit_m",
                                  "agent.model.models.1.retry={retries: 2}"])
    student, expert = config.agent.model.models
    assert student.name == "hosted_vllm//ckpt/round-2" and student.api_base == "http://127.0.0.1:8001/v1"
    assert student.temperature == 0.7  # the rest of the element is kept
    assert student.tools.bundles[2] == "tools/review_on_submit_m"
    assert expert.per_instance_cost_limit == 0.5
    assert (expert.retry.retries, expert.retry.min_wait) == (2, 10)  # a mapping merges into the element


@pytest.mark.parametrize("override, message", [
    ("agent.model.models.2.name=x", "agent.model.models is a list of 2; '2' is not an index in it"),
    ("agent.model.models.student.name=x", "'student' is not an index in it"),
    ("agent.model.name.first=x", "agent.model.name holds 'switching', not a mapping or list"),
])
def test_bad_list_overrides_are_one_line_errors(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text(SWE_AGENT_YAML)
    with pytest.raises(UserError) as err:
        load_config([path], [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_paths_resolve_against_the_config_file_that_set_them(tmp_path, monkeypatch):
    (tmp_path / "a/grammars").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    base = write(tmp_path / "a", "base.yaml", {"agent": {"model": {
        "name": "switching", "switching_criteria": {"type": "step_count", "threshold": 1},
        "models": [{"name": "replay", "replay_path": "student.jsonl"},
                   {"name": "hosted_vllm/m", "grammar_file": "grammars/g.gbnf", "per_instance_cost_limit": 0}]}}})
    later = write(tmp_path / "b", "later.yaml", {"agent": {"model": {"models": [
        {"name": "replay", "replay_path": "../b/other.jsonl"},
        {"name": "hosted_vllm/m", "grammar_file": "grammars/g.gbnf", "per_instance_cost_limit": 0}]}}})
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    student, expert = load_config([base]).agent.model.models
    assert student.replay_path == str(tmp_path / "a/student.jsonl")
    assert expert.grammar_file == str(tmp_path / "a/grammars/g.gbnf")
    student, expert = load_config([base, later]).agent.model.models  # a list is replaced by the later file's
    assert student.replay_path == str(tmp_path / "b/other.jsonl") and expert.grammar_file == str(tmp_path / "b/grammars/g.gbnf")
    # On the command line, the current directory; absolute paths and $VARs stay as they are.
    monkeypatch.setenv("OEC_GRAMMAR", "/abs/g.gbnf")
    student, expert = load_config([base], ["agent.model.models.0.replay_path=mine.jsonl",
                                           "agent.model.models.1.grammar_file=$OEC_GRAMMAR"]).agent.model.models
    assert student.replay_path == str(elsewhere / "mine.jsonl") and expert.grammar_file == "/abs/g.gbnf"


def test_shipped_replay_config_runs_from_any_directory(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    config = load_config([Path(__file__).parent.parent / "config/replay_tinycalc.yaml"])
    assert Path(config.agent.model.replay_path).is_file()


def test_swe_agent_env_deployment_and_model_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("OEC_TEST_KEY", "sk-one:::sk-two")
    data = {"env": {"deployment": {"image": "swesmith.x86_64.repo.abc", "remove_container": True, "python_standalone_dir": ""},
                    "post_startup_commands": ["pip install -e ."]},
            "agent": {"model": {"name": "replay", "replay_path": "r.jsonl"}, "tools": {"env_variables": {"WINDOW": 100, "PAGER": "cat"}}}}
    config = load_config([write(tmp_path, "ok.yaml", data)])
    env = config.env  # a deployment without a type is SWE-agent's default, docker
    assert (env.type, env.image_name, env.startup_commands) == ("docker", "swesmith.x86_64.repo.abc", ["pip install -e ."])
    assert config.agent.tools.env_variables == {"WINDOW": "100", "PAGER": "cat"}  # exported as str(value), as SWE-agent does
    data["env"]["deployment"] = {"type": "modal", "docker_args": ["--privileged"], "gpus": 1}
    data["env"]["repo"] = {"github_url": "https://github.com/x/y"}
    data["agent"]["model"] = {"name": "switching", "switching_criteria": {"type": "step_count", "threshold": 1},
                              "models": [{"name": "human"}, {"name": "anthropic/claude-3-7-sonnet-20250219", "api_key": "$OEC_TEST_KEY"}]}
    with pytest.raises(UserError) as err:
        load_config([write(tmp_path, "bad.yaml", data)])
    message = str(err.value)
    assert message.startswith("6 config errors: ") and "sk-one" not in message
    for part in ("env.repo: the repository comes from each instance", "env.deployment.type: only `docker` and `local`",
                 "env.deployment.docker_args: extra docker arguments are not supported", "unknown config key env.deployment.gpus",
                 "agent.model.models.0.name: SWE-agent's `human` model is not supported",
                 "agent.model.models.1.api_key: several keys joined by ':::'"):
        assert part in message, part


def test_long_values_in_errors_are_cut(tmp_path):
    data = {"agent": {"model": {"name": "replay", "replay_path": "r.jsonl"},
                      "templates": {"strategy_template": "Think step by step. " * 50}}}
    with pytest.raises(UserError) as err:
        load_config([write(tmp_path, "c.yaml", data)])
    assert "agent.templates.strategy_template: a strategy template is not supported (got 'Think step" in str(err.value)
    assert len(str(err.value)) < 200
