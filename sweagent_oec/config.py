"""The run config: pydantic schema of the YAML, loading several files merged in order,
`key.path=value` overrides, and `$VAR` references resolved from the environment at load time.

Keys follow SWE-agent's where they exist (DESIGN section 5). Unknown keys and wrong types are
errors that name the key path. Resolved secrets live only in memory: `raw` (what the files said,
`$VAR` references intact, literal API keys redacted) is what gets written into trajectories.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from sweagent_oec.env.runtime import EnvConfig
from sweagent_oec.tools.specs import BUNDLES, REVIEW_BUNDLE, bundle_key, tool_names
from sweagent_oec.errors import UserError
from sweagent_oec import secrets


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_template(where: str, source: str) -> None:
    """A jinja template that does not parse is a config error, not a failure in the middle of a run."""
    import jinja2

    try:
        jinja2.Environment().parse(source)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"{where}: not a valid jinja template ({e.message}, line {e.lineno})") from None


# ---------------------------------------------------------------- agent parts

DEFAULT_SYSTEM_TEMPLATE = """You are a helpful assistant that can interact with a computer to solve tasks.
{% if tool_docs %}
You have access to the following functions:

{{tool_docs}}

If you choose to call a function ONLY reply in the following format with NO suffix:

{{call_format}}
{% endif %}"""

DEFAULT_INSTANCE_TEMPLATE = """<uploaded_files>
{{working_dir}}
</uploaded_files>
I've uploaded a python code repository in the directory {{working_dir}}. Consider the following PR description:

<pr_description>
{{problem_statement}}
</pr_description>

Can you help me implement the necessary changes to the repository so that the requirements specified in the <pr_description> are met?
I've already taken care of all changes to any of the test files described in the <pr_description>. This means you DON'T have to modify the testing logic or any of the tests in any way!
Your task is to make the minimal changes to non-tests files in the {{working_dir}} directory to ensure the <pr_description> is satisfied.
Follow these steps to resolve the issue:
1. As a first step, it might be a good idea to find and read code relevant to the <pr_description>
2. Create a script to reproduce the error and execute it with `python <filename.py>` using the bash tool, to confirm the error
3. Edit the source code of the repo to resolve the issue
4. Rerun your reproduce script and confirm that the error is fixed!
5. Think about edgecases and make sure your fix handles them as well
When you are done, call the submit function. Your thinking should be thorough and so it's fine if it's very long."""


class TemplateConfig(Strict):
    system_template: str = DEFAULT_SYSTEM_TEMPLATE
    instance_template: str = DEFAULT_INSTANCE_TEMPLATE
    next_step_template: str = "OBSERVATION:\n{{observation}}"
    next_step_no_output_template: str = "Your command ran successfully and did not produce any output."
    next_step_truncated_observation_template: str = (
        "Observation: {{observation[:max_observation_length]}}<response clipped>"
        "<NOTE>Observations should not exceed {{max_observation_length}} characters. "
        "{{elided_chars}} characters were elided. Please try a different command that produces less output "
        "or use head/tail/grep/redirect the output to a file. Do not use interactive pagers.</NOTE>"
    )
    max_observation_length: int = 100_000
    #: SWE-agent's `command_cancelled_timeout_template` (the loader renames it).
    command_timeout_template: str = (
        "The command '{{command}}' was cancelled because it took more than {{timeout}} seconds. "
        "Please try a different command that completes more quickly."
    )
    #: Re-query message when a bash command does not parse (`bash -n`); variables `bash_stdout`,
    #: `bash_stderr`, `action`. The command is not run.
    shell_check_error_template: str = (
        "Your bash command was NOT run: `bash -n` found a syntax error in it (check quoting, heredocs and "
        "multi-line commands), so please send a corrected command.\n{{bash_stdout}}\n{{bash_stderr}}"
    )

    @model_validator(mode="after")
    def _templates_parse(self) -> "TemplateConfig":
        for name, value in self:
            if name.endswith("_template") and isinstance(value, str):
                _check_template(name, value)
        return self


class ParseFunctionConfig(Strict):
    type: Literal["function_calling", "xml_function_calling", "thought_action"] = "function_calling"


#: The review message a `tools/review_on_submit_m` submit shows when the config gives none
#: (`registry_variables.SUBMIT_REVIEW_MESSAGES`). Variables: diff, problem_statement, working_dir.
DEFAULT_REVIEW_MESSAGE = """Before this is submitted, please review your work:

1. If you changed the code after last running your reproduction script, run it again and make sure it passes.
2. Delete the reproduction script and any other scratch files you created.
3. If you changed any test files, restore them (e.g. `git checkout -- path/to/test_file.py`): the diff below shows which.
4. Then call submit again to submit.

These are all the changes you made:

<diff>
{{diff}}
</diff>"""


class ToolFilterConfig(Strict):
    """Commands the agent is re-queried about instead of running (SWE-agent's `tools.filter`, same defaults):
    those that start with a `blocklist` entry, equal a `blocklist_standalone` entry, or are named in
    `block_unless_regex` without matching its pattern."""

    blocklist_error_template: str = (
        "The command '{{action}}' was NOT run: interactive or never-ending programs are not available in this "
        "environment. Please run a different command."
    )
    blocklist: list[str] = Field(default_factory=lambda: [
        "vim", "vi", "emacs", "nano", "nohup", "gdb", "less", "tail -f", "python -m venv", "make"])
    blocklist_standalone: list[str] = Field(default_factory=lambda: [
        "python", "python3", "ipython", "bash", "sh", "/bin/bash", "/bin/sh", "nohup", "vi", "vim", "emacs", "nano", "su"])
    block_unless_regex: dict[str, str] = Field(default_factory=lambda: {
        "radare2": r"\b(?:radare2)\b.*\s+-c\s+.*", "r2": r"\b(?:radare2)\b.*\s+-c\s+.*"})

    def blocks(self, action: str) -> bool:
        action = action.strip()
        if not action:
            return False
        if any(action.startswith(prefix) for prefix in self.blocklist) or action in self.blocklist_standalone:
            return True
        name = action.split()[0]
        return name in self.block_unless_regex and not re.search(self.block_unless_regex[name], action)

    @model_validator(mode="after")
    def _valid(self) -> "ToolFilterConfig":
        for name, pattern in self.block_unless_regex.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"block_unless_regex.{name}: not a regular expression ({e})") from None
        _check_template("blocklist_error_template", self.blocklist_error_template)
        return self


#: Registry variables (SWE-agent's `tools.registry_variables`) this toolkit honours.
REGISTRY_VARIABLES = ("USE_FILEMAP", "SUBMIT_REVIEW_MESSAGES")


class ToolsConfig(Strict):
    #: Tool names (bash, str_replace_editor, submit) or SWE-agent bundle paths (`tools/edit_anthropic`; the
    #: loader turns SWE-agent's `{path: ...}` entries into paths); `tools/review_on_submit_m` turns on
    #: review-on-submit.
    bundles: list[str] = Field(default_factory=lambda: ["bash", "str_replace_editor", "submit"])
    #: SWE-agent's key: the bash tool is there unless this is false (and no bundle names it).
    enable_bash_tool: bool = True
    #: SWE-agent's registry: USE_FILEMAP ('true': `str_replace_editor view` of a large .py file shows an
    #: outline) and SUBMIT_REVIEW_MESSAGES (review-on-submit's messages, one per review round).
    registry_variables: dict[str, Any] = Field(default_factory=dict)
    filter: ToolFilterConfig = Field(default_factory=ToolFilterConfig)
    parse_function: ParseFunctionConfig = Field(default_factory=ParseFunctionConfig)
    execution_timeout: int = 30
    max_consecutive_execution_timeouts: int = 3
    total_execution_timeout: int = 1800
    #: Exported in the agent's session when this actor starts (or takes over).
    env_variables: dict[str, str] = Field(default_factory=dict)
    format_error_template: str = (
        "Your last output did not use a valid action format: {{error}}\n"
        "Please answer again with exactly one action, in the required format."
    )
    #: Bash commands are checked with `bash -n` before they run; one that does not parse is re-queried
    #: (templates.shell_check_error_template), as SWE-agent does.
    check_bash_syntax: bool = True

    @model_validator(mode="after")
    def _known(self) -> "ToolsConfig":
        unknown = [b for b in self.bundles if bundle_key(b) not in BUNDLES]
        if unknown:
            raise ValueError(f"unknown tool bundle(s) {unknown}; this toolkit has {sorted(BUNDLES)}")
        if not self.tool_names():
            raise ValueError("no tools: give bundles or set enable_bash_tool: true")
        bad_names = [k for k in self.env_variables if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
        if bad_names:
            raise ValueError(f"env_variables: {bad_names} are not shell variable names")
        unsupported = sorted(set(self.registry_variables) - set(REGISTRY_VARIABLES))
        if unsupported:
            raise ValueError(f"registry variable(s) {unsupported} are not supported by this toolkit "
                             f"(it honours {list(REGISTRY_VARIABLES)})")
        filemap = self.registry_variables.get("USE_FILEMAP", "false")
        if str(filemap).lower() not in ("true", "false"):
            raise ValueError(f"registry variable USE_FILEMAP must be 'true' or 'false' (got {filemap!r})")
        messages = self.registry_variables.get("SUBMIT_REVIEW_MESSAGES")
        if messages is not None:
            if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
                raise ValueError("registry variable SUBMIT_REVIEW_MESSAGES must be a list of message templates")
            if not self.review_on_submit:
                raise ValueError("registry variable SUBMIT_REVIEW_MESSAGES needs the tools/review_on_submit_m bundle")
            for i, message in enumerate(messages):
                _check_template(f"registry variable SUBMIT_REVIEW_MESSAGES[{i}]", message)
        _check_template("format_error_template", self.format_error_template)
        return self

    def tool_names(self) -> list[str]:
        return tool_names(self.bundles, self.enable_bash_tool)

    @property
    def review_on_submit(self) -> bool:
        return any(bundle_key(b) == REVIEW_BUNDLE for b in self.bundles)

    @property
    def review_messages(self) -> list[str]:
        """The messages submit shows, one per call, before a call submits (empty: submit at once)."""
        if not self.review_on_submit:
            return []
        return list(self.registry_variables.get("SUBMIT_REVIEW_MESSAGES") or [DEFAULT_REVIEW_MESSAGE])

    @property
    def use_filemap(self) -> bool:
        return str(self.registry_variables.get("USE_FILEMAP", "false")).lower() == "true"


class HistoryProcessorConfig(Strict):
    type: Literal["last_n_observations", "cache_control"]
    #: last_n_observations: how many of the most recent observations stay in full.
    n: int = 5
    #: cache_control: how many of the last messages get Anthropic's cache_control mark.
    last_n_messages: int = 2


# ---------------------------------------------------------------- models


class RetryConfig(Strict):
    retries: int = 6
    min_wait: float = 1.0
    max_wait: float = 60.0


class SwitchingCriteria(Strict):
    """When the expert takes over from the student.

    Schedules: `step_count`, `random_step_range`, `token_count`, `cost`. Triggers on the student's
    behaviour: `loop` (the SFT filter's repetition rules, applied live), `format_errors` (`threshold`
    malformed replies in a row), `judge` (every `every` student steps a judge model reads the run so
    far and answers intervene/continue). `any_of` combines criteria: the first to fire wins.
    `branches`: one student rollout seeds an expert takeover at each of `steps` (or `k` steps drawn
    from [start_step, end_step])."""

    type: Literal["step_count", "random_step_range", "token_count", "cost", "loop", "format_errors", "judge",
                  "any_of", "branches"]
    #: step_count: switch after this many student queries; token_count / cost: after this much use;
    #: format_errors: after this many malformed replies in a row.
    threshold: float | None = None
    #: random_step_range (and branches with k): a uniform integer in [start_step, end_step], inclusive, drawn per instance.
    start_step: int | None = None
    end_step: int | None = None
    #: loop: the repetition rules of `convert`'s filter (0 turns a rule off).
    max_consecutive: int = Field(3, ge=0)
    cycle_repeats: int = Field(3, ge=0)
    max_total: int = Field(10, ge=0)
    #: judge: ask every this many student steps, with this model and (optionally) this system prompt.
    every: int | None = Field(None, ge=1)
    judge: "ModelConfig | None" = None
    judge_template: str | None = None
    #: any_of: the criteria, first to fire wins.
    criteria: list["SwitchingCriteria"] = Field(default_factory=list)
    #: branches: the switch steps, or how many distinct ones to draw from [start_step, end_step].
    steps: list[int] = Field(default_factory=list)
    k: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _complete(self) -> "SwitchingCriteria":
        kind = self.type
        if kind == "random_step_range" or (kind == "branches" and self.k is not None):
            if self.start_step is None or self.end_step is None or self.start_step > self.end_step or self.start_step < 0:
                raise ValueError(f"{kind} needs 0 <= start_step <= end_step")
        if kind == "branches":
            if bool(self.steps) == (self.k is not None):
                raise ValueError("branches needs either `steps` (a list) or `k` with start_step/end_step")
            if any(s < 0 for s in self.steps) or len(set(self.steps)) != len(self.steps):
                raise ValueError("branches: `steps` must be distinct non-negative integers")
            if self.k is not None and self.k > self.end_step - self.start_step + 1:
                raise ValueError(f"branches: cannot draw k={self.k} distinct steps from [{self.start_step}, {self.end_step}]")
        elif kind == "judge":
            if self.every is None or self.judge is None:
                raise ValueError("judge needs `every` (student steps between reviews) and a `judge` model")
            if self.judge.name == "switching":
                raise ValueError("judge: the judge model cannot be a switching model")
        elif kind == "any_of":
            if not self.criteria:
                raise ValueError("any_of needs a non-empty `criteria` list")
            if any(c.type in ("any_of", "branches") for c in self.criteria):
                raise ValueError("any_of: its criteria cannot be any_of or branches")
        elif kind in ("step_count", "token_count", "cost", "format_errors"):
            if self.threshold is None or self.threshold < 0:
                raise ValueError(f"{kind} needs a non-negative threshold")
        return self

    def describe(self) -> dict:
        """What a trajectory records of the criterion: the keys set, the judge by model name only
        (its endpoint and key stay out of every written file)."""
        out = self.model_dump(exclude_defaults=True, exclude={"judge", "criteria"})
        out["type"] = self.type
        if self.judge is not None:
            out["judge"] = self.judge.name
        if self.criteria:
            out["criteria"] = [c.describe() for c in self.criteria]
        return out


class Price(Strict):
    """Dollars per million tokens: uncached input, output, cached input read, cache write."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) not in (2, 4):
                raise ValueError("give [input, output], [input, output, cache_read, cache_write] or a mapping")
            return dict(zip(("input", "output", "cache_read", "cache_write"), value))
        return value


class ModelConfig(Strict):
    """`agent.model`: a litellm model, `replay`, `oracle`, or `switching` over [student, expert]."""

    name: str
    #: One endpoint, or several replicas of one model (a list, or `api_bases`): requests are spread
    #: across them by litellm's Router, which fails over when one stops answering.
    api_base: str | list[str] | None = None
    api_bases: list[str] = Field(default_factory=list)
    api_key: SecretStr | None = None
    api_version: str | None = None
    temperature: float = 0.0
    top_p: float | None = None
    max_output_tokens: int | None = None
    per_instance_cost_limit: float = 3.0
    total_cost_limit: float = 0.0
    per_instance_call_limit: int = 0
    max_input_tokens: int | None = None
    completion_kwargs: dict[str, Any] = Field(default_factory=dict)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    timeout: float = 600.0
    #: Constrained decoding: a grammar file (GBNF for llama.cpp, or what the server takes) sent
    #: with every request in `extra_body` under `grammar_field`, a dotted path merged into any
    #: `extra_body` of `completion_kwargs`: llama.cpp takes "grammar"; vLLM 0.32 takes
    #: "structured_outputs.grammar" (it ignores "grammar" and "guided_grammar" without an error).
    grammar_file: str | None = None
    grammar_field: str = Field("grammar", pattern=r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*$")
    #: SWE-agent's keys: stop sequences; system prompt sent as a user message (for models without
    #: a system role); a litellm model-cost JSON (`model_cost` format) to price models from.
    stop: list[str] = Field(default_factory=list)
    convert_system_to_user: bool = False
    litellm_model_registry: str | None = None
    #: Dollars per million tokens; overrides every other price (models/pricing.py). `[input, output]`
    #: or `{input, output, cache_read, cache_write}` (cache prices default to the input price).
    price_per_million_tokens: Price | None = None
    #: replay: a `.traj` file or a JSONL of responses.
    replay_path: str | None = None
    #: switching: [student, expert]; each may carry its own templates, tools, history processors.
    models: list["SubModelConfig"] | None = None
    switching_criteria: SwitchingCriteria | None = None
    seed: int = 0
    #: switching: whether a re-query after a format error counts toward the student's steps.
    count_format_errors_as_steps: bool = True

    @model_validator(mode="after")
    def _switching(self) -> "ModelConfig":
        if self.name == "switching":
            if not self.models or len(self.models) != 2:
                raise ValueError("a switching model needs `models: [student, expert]` (exactly two)")
            if self.switching_criteria is None:
                raise ValueError("a switching model needs `switching_criteria`")
        elif self.models:
            raise ValueError("`models` is only for `name: switching`")
        if isinstance(self.api_base, list):
            if self.api_bases:
                raise ValueError("give the replicas once: api_base as a list, or api_bases, not both")
            self.api_bases, self.api_base = list(self.api_base), None
        if self.api_bases and self.api_base:
            raise ValueError("give api_base (one endpoint) or api_bases (replicas), not both")
        if len(set(self.api_bases)) != len(self.api_bases):
            raise ValueError("api_bases lists an endpoint twice")
        if self.name == "replay" and not self.replay_path:
            raise ValueError("the replay model needs `replay_path`")
        return self


class SubModelConfig(ModelConfig):
    """One side of a switching model, with optional per-model agent settings."""

    templates: TemplateConfig | None = None
    tools: ToolsConfig | None = None
    history_processors: list[HistoryProcessorConfig] | None = None


ModelConfig.model_rebuild()
SwitchingCriteria.model_rebuild()


class AgentConfig(Strict):
    #: SWE-agent's agent type; only its default agent exists here.
    type: Literal["default"] = "default"
    templates: TemplateConfig = Field(default_factory=TemplateConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    history_processors: list[HistoryProcessorConfig] = Field(default_factory=list)
    model: ModelConfig
    #: SWE-agent's re-query policy: a step gets at most this many model replies in all; a reply that
    #: cannot be parsed, a blocklisted command or a bash syntax error is re-queried showing only the
    #: last failed reply and its error; when all fail, the run ends with exit_format.
    max_requeries: int = Field(3, ge=1)


class ExecutorConfig(Strict):
    """Where run-batch's instances run: threads of one process, or threads of one runner per node of a Ray cluster."""

    type: Literal["threads", "ray"] = "threads"
    #: Ray: the cluster ("auto": a running one; none: RAY_ADDRESS, else a local Ray instance).
    address: str | None = None
    #: Ray: what one instance asks of a node: CPUs (a fraction is fine: model calls are I/O), memory
    #: in bytes, custom resources (e.g. {docker: 1} so tasks land on nodes that can run containers).
    num_cpus: float = Field(1.0, ge=0)
    memory: int | None = Field(None, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    #: Ray: how often an instance whose node died is run again elsewhere.
    max_retries: int = Field(3, ge=0)


class RunConfig(Strict):
    agent: AgentConfig
    env: EnvConfig = Field(default_factory=EnvConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    #: Where trajectories go (`<output_dir>/<instance_id>/<instance_id>.traj`).
    output_dir: str = "trajectories"
    #: The merged config as written in the files ($VAR references intact, literal keys redacted).
    raw: dict = Field(default_factory=dict, exclude=True)


# ---------------------------------------------------------------- loading

_VAR = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(data: dict, override: str, base_dir: Path | None = None) -> dict:
    """`agent.model.temperature=0.5`, `agent.model.models.0.name=x`: the value is read as YAML
    (numbers, lists, true/false); a number in the path indexes a list. A relative path value of a
    path key (PATH_KEYS) is taken relative to `base_dir` (the current directory)."""
    if "=" not in override:
        raise UserError(f"override {override!r} must look like key.path=value")
    path, _, text = override.partition("=")
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise UserError(f"override {override!r} has an empty key path")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    if keys[-1] in PATH_KEYS:
        value = _absolute_path(value, base_dir or Path.cwd())
    out = copy.deepcopy(data)
    node: Any = out
    for depth, key in enumerate(keys):
        where = ".".join(keys[:depth]) or "<top>"
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not re.fullmatch(r"-?\d+", key) or not -len(node) <= int(key) < len(node):
                raise UserError(f"override {override!r}: {where} is a list of {len(node)}; {key!r} is not an index in it")
            index = int(key)
            if last:
                node[index] = _merged(node[index], value)
            else:
                if node[index] is None:
                    node[index] = {}
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[key] = _merged(node.get(key), value)
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
        else:
            raise UserError(f"override {override!r}: {where} holds {node!r}, not a mapping or list")
    return out


def _merged(old: Any, new: Any) -> Any:
    return deep_merge(old, new) if isinstance(old, dict) and isinstance(new, dict) else copy.deepcopy(new)


def resolve_env_refs(data: Any, path: str = "", errors: list[str] | None = None) -> Any:
    """Replace "$VAR" / "${VAR}" strings with the variable's value; a missing variable is an error
    (collected into `errors` when given, raised at once otherwise)."""
    if isinstance(data, dict):
        return {k: resolve_env_refs(v, f"{path}.{k}" if path else str(k), errors) for k, v in data.items()}
    if isinstance(data, list):
        return [resolve_env_refs(v, f"{path}.{i}", errors) for i, v in enumerate(data)]
    if isinstance(data, str):
        match = _VAR.match(data.strip())
        if match:
            name = match.group(1)
            if name not in os.environ:
                message = f"config key {path} refers to ${name}, which is not set in the environment"
                if errors is None:
                    raise UserError(message)
                errors.append(message)
                return data
            return os.environ[name]
    return data


def redact_secrets(data: Any) -> Any:
    """What a config may show in written files: `$VAR` references kept, literal values under
    secret-looking keys (key, token, secret, password, authorization...; any nesting, headers and
    env_variables included) and provider-key-shaped values replaced by "***" (sweagent_oec/secrets.py)."""
    return secrets.redact(data)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"config file {path} is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not a text file") from None
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping at the top level")
    return data


# ---------------------------------------------------------------- relative paths

#: Keys whose values are files: a relative path resolves against the directory of the config file
#: that set it (an override's, against the current directory), wherever the key sits.
PATH_KEYS = frozenset({"replay_path", "grammar_file", "litellm_model_registry"})


def _absolute_path(value: Any, base_dir: Path) -> Any:
    if not isinstance(value, str) or not value.strip() or _VAR.match(value.strip()):
        return value
    path = Path(value).expanduser()
    return value if path.is_absolute() else os.path.normpath(base_dir / path)


def resolve_paths(data: Any, base_dir: Path) -> Any:
    if isinstance(data, dict):
        return {k: _absolute_path(v, base_dir) if k in PATH_KEYS else resolve_paths(v, base_dir) for k, v in data.items()}
    if isinstance(data, list):
        return [resolve_paths(v, base_dir) for v in data]
    return data


# ---------------------------------------------------------------- SWE-agent's keys

_ANY = object()
_NEVER = object()


class _OneOf(tuple):
    """Several accepted values of a SWE-agent key."""


def _shown(value: Any) -> str:
    """A value for an error message, short (long templates and mappings are cut)."""
    text = repr(value)
    return f" (got {text[:57]}...)" if len(text) > 60 else f" (got {text})"

#: SWE-agent 1.x keys that no class here has a field for: `{section: {key: (accepted, why)}}`. A
#: key is accepted (and dropped) when its value is the one given, which changes nothing here
#: (`_ANY`: any value); any other value is an error naming the key and the reason. A key that a
#: class has a field for is never looked up here: the field wins.
SWE_AGENT_KEYS: dict[str, dict[str, tuple[Any, str]]] = {
    "run": {
        "instances": (_NEVER, "give instances on the command line (run-batch --instances)"),
        "num_workers": (_NEVER, "give it on the command line (run-batch -w/--workers)"),
        "redo_existing": (_NEVER, "give it on the command line (run-batch --redo-existing)"),
        "problem_statement": (_NEVER, "tasks come from --instances (JSON/JSONL, datasets, 'embedded')"),
        "suffix": (_NEVER, "name the folder with output_dir"),
        "env_var_path": (_NEVER, "set variables in the environment and refer to them as $VAR"),
        "actions": (_NEVER, "post-run actions (open a PR, apply the patch) are not supported"),
        "random_delay_multiplier": (_NEVER, "workers start without a random delay here"),
        "progress_bar": (_NEVER, "give --no-progress on the command line"),
    },
    "agent": {
        "type": ("default", "only SWE-agent's default agent loop exists here"),
        "name": ("main", "history items name the agent `main`"),
        "action_sampler": (None, "action samplers (several candidate actions per step) are not supported"),
    },
    "model": {
        "delay": (0.0, "a minimum delay between queries is not supported; rate limits are retried with backoff"),
        "fallbacks": ([], "fallback models are not supported: each role is one model, so a trajectory says who acted"),
        "choose_api_key_by_thread": (_ANY, "one API key per model here"),
        "custom_tokenizer": (None, "max_input_tokens is counted with litellm's tokenizer for the model"),
    },
    "tools": {
        "submit_command": ("submit", "the submit tool is always named `submit`"),
        "command_docs": (None, "tool docs are generated from the tools"),
        "multi_line_command_endings": ({}, "multi-line (heredoc) commands are not supported"),
        "submit_command_end_name": (None, "multi-line (heredoc) commands are not supported"),
        "reset_commands": ([], "use env.startup_commands"),
        "install_timeout": (300, "tools are copied in, not installed, so there is no install timeout"),
        "filter": ({}, "command filters (blocklists) are not supported"),
    },
    "templates": {
        "strategy_template": (None, "a strategy template is not supported"),
        "demonstration_template": (None, "demonstrations are not supported"),
        "demonstrations": ([], "demonstrations are not supported"),
        "put_demos_in_history": (False, "demonstrations are not supported"),
        "disable_image_processing": (_ANY, "no images are processed here"),
        "shell_check_error_template": (None, "bash syntax checks are not supported"),
    },
    "history_processor": {
        "polling": (1, "observations are elided on every step"),
        "last_n_messages_offset": (0, "cache marks go on the last messages"),
        "tagged_roles": (["user", "tool"], "cache marks go on user and tool messages"),
        "always_remove_output_for_tags": (["remove_output"], "observations are not tagged here"),
        "always_keep_output_for_tags": (["keep_output"], "observations are not tagged here"),
    },
    "env": {
        "repo": (_NEVER, "the repository comes from each instance (--instances)"),
        "name": ("main", "one environment per instance here"),
        "post_startup_command_timeout": (500, "start-up commands run with the session's command timeout"),
    },
    "deployment": {
        "docker_args": ([], "extra docker arguments are not supported"),
        "startup_timeout": (180.0, "containers start without a start-up timeout here"),
        "pull": ("missing", "images are never pulled implicitly here"),
        "remove_images": (False, "images are kept"),
        "python_standalone_dir": (_OneOf((None, "")), "the tools run on the image's own python"),
        "platform": (None, "the engine's default platform is used"),
        "remove_container": (True, "containers are always removed"),
        "container_runtime": ("docker", "set DOCKER_HOST or env.docker_host for another engine"),
        "port": (None, "no port is exposed"),
    },
    "bundle": {
        "hidden_tools": ([], "hiding a bundle's tools is not supported"),
    },
}

#: SWE-agent names of keys that exist here under another name: `{section: {theirs: ours}}`.
SWE_AGENT_RENAMES = {"templates": {"command_cancelled_timeout_template": "command_timeout_template"},
                     "env": {"post_startup_commands": "startup_commands"}}

#: SWE-agent model names that are not models here.
SWE_AGENT_MODELS = {
    "human": "interactive models cannot run here",
    "human_thought": "interactive models cannot run here",
    "instant_empty_submit": "use a replay model (`name: replay`) as a stand-in",
}


def _section(node: Any, cls: type[BaseModel] | None, section: str, path: str, errors: list[str]) -> None:
    """Apply SWE_AGENT_RENAMES and SWE_AGENT_KEYS to one mapping, in place."""
    if not isinstance(node, dict):
        return
    fields = cls.model_fields if cls is not None else {}
    for theirs, ours in SWE_AGENT_RENAMES.get(section, {}).items():
        if theirs in node and theirs not in fields:
            if ours in node:
                errors.append(f"config keys {path}.{theirs} and {path}.{ours} are the same setting: give one")
                del node[theirs]
            else:
                node[ours] = node.pop(theirs)
    for key in list(node):
        if key in fields or key not in SWE_AGENT_KEYS.get(section, {}):
            continue
        accepted, why = SWE_AGENT_KEYS[section][key]
        value = node.pop(key)
        if accepted is _ANY or (value in accepted if isinstance(accepted, _OneOf) else value == accepted):
            continue
        errors.append(f"config key {path}.{key}: {why}{_shown(value)}")


def _tools(node: Any, path: str, errors: list[str]) -> None:
    """SWE-agent bundles: `{path: tools/x}` entries become the string `tools/x`."""
    _section(node, ToolsConfig, "tools", path, errors)
    if isinstance(node, dict) and isinstance(node.get("env_variables"), dict):
        # SWE-agent exports str(value): `WINDOW: 100` is the string "100"
        node["env_variables"] = {k: str(v) if isinstance(v, (int, float)) else v for k, v in node["env_variables"].items()}
    if not isinstance(node, dict) or not isinstance(node.get("bundles"), list):
        return
    bundles = []
    for i, bundle in enumerate(node["bundles"]):
        if isinstance(bundle, dict):
            where = f"{path}.bundles.{i}"
            _section(bundle, None, "bundle", where, errors)
            unknown = sorted(set(bundle) - {"path"})
            if unknown:
                errors.append(f"unknown config key {where}.{unknown[0]}" if len(unknown) == 1 else
                              f"unknown config keys {', '.join(f'{where}.{k}' for k in unknown)}")
                continue
            if not isinstance(bundle.get("path"), str):
                errors.append(f"config key {where}: a bundle is a path or {{path: <path>}}")
                continue
            bundle = bundle["path"]
        bundles.append(bundle)
    node["bundles"] = bundles


def _env(node: Any, errors: list[str]) -> None:
    """SWE-agent's `env.deployment` ({type: docker, image: ...}) becomes env.type / env.image_name."""
    _section(node, EnvConfig, "env", "env", errors)
    if not isinstance(node, dict) or "deployment" not in node or "deployment" in EnvConfig.model_fields:
        return
    deployment = node.pop("deployment")
    if not isinstance(deployment, dict):
        errors.append("config key env.deployment: give a mapping with `type: docker | local`")
        return
    kind, image = deployment.pop("type", "docker"), deployment.pop("image", None)  # SWE-agent's default: docker
    if kind not in ("docker", "local"):
        errors.append(f"config key env.deployment.type: only `docker` and `local` deployments exist here (got {kind!r})")
    elif "type" in node and node["type"] != kind:
        errors.append(f"config keys env.type and env.deployment.type disagree ({node['type']!r} vs {kind!r})")
    else:
        node["type"] = kind
    if image is not None:
        node["image_name"] = image
    _section(deployment, None, "deployment", "env.deployment", errors)
    for key in deployment:
        errors.append(f"unknown config key env.deployment.{key}")


def _model(node: Any, cls: type[BaseModel], path: str, errors: list[str]) -> None:
    _section(node, cls, "model", path, errors)
    if isinstance(node, dict) and node.get("name") in SWE_AGENT_MODELS:
        errors.append(f"config key {path}.name: SWE-agent's `{node['name']}` model is not supported: "
                      f"{SWE_AGENT_MODELS[node['name']]}")


def _agent_parts(node: dict, path: str, errors: list[str]) -> None:
    _tools(node.get("tools"), f"{path}.tools", errors)
    _section(node.get("templates"), TemplateConfig, "templates", f"{path}.templates", errors)
    processors = node.get("history_processors")
    if isinstance(processors, list):
        kept = []
        for i, processor in enumerate(processors):
            if isinstance(processor, dict) and processor.get("type") == "default" and len(processor) == 1:
                continue  # SWE-agent's no-op processor
            _section(processor, HistoryProcessorConfig, "history_processor", f"{path}.history_processors.{i}", errors)
            kept.append(processor)
        node["history_processors"] = kept


def swe_agent_compat(data: dict, errors: list[str]) -> dict:
    """SWE-agent 1.x (and its OEC fork's switching) YAML, brought to this schema; what cannot be
    honoured goes into `errors`, each naming the key and why."""
    data = copy.deepcopy(data)
    _section(data, RunConfig, "run", "<top>", errors)
    _env(data.get("env"), errors)
    agent = data.get("agent")
    if not isinstance(agent, dict):
        return data
    _section(agent, AgentConfig, "agent", "agent", errors)
    _agent_parts(agent, "agent", errors)
    model = agent.get("model")
    if isinstance(model, dict):
        _model(model, ModelConfig, "agent.model", errors)
        if isinstance(model.get("models"), list):
            for i, sub in enumerate(model["models"]):
                if isinstance(sub, dict):
                    _model(sub, SubModelConfig, f"agent.model.models.{i}", errors)
                    _agent_parts(sub, f"agent.model.models.{i}", errors)
    return data


def _several_keys(values: dict, errors: list[str]) -> None:
    """SWE-agent rotates keys joined by ':::'; here a model has one key (the value is never shown)."""
    model = (values.get("agent") or {}).get("model") if isinstance(values.get("agent"), dict) else None
    if not isinstance(model, dict):
        return
    subs = model.get("models") if isinstance(model.get("models"), list) else []
    for path, node in [("agent.model", model), *((f"agent.model.models.{i}", m) for i, m in enumerate(subs))]:
        if isinstance(node, dict) and isinstance(node.get("api_key"), str) and ":::" in node["api_key"]:
            errors.append(f"config key {path}.api_key: several keys joined by ':::' (SWE-agent's key rotation) "
                          "are not supported; give one key")


# ---------------------------------------------------------------- validation


def _describe_one(error: dict) -> str:
    loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
    if error["type"] == "extra_forbidden":
        return f"unknown config key {loc}"
    if error["type"] == "missing":
        return f"config key {loc} is required"
    value = error.get("input")
    shown = "" if isinstance(value, (dict, list)) else _shown(value)
    return f"config key {loc or '<top>'}: {error['msg']}{shown}"


def _describe(error: ValidationError) -> list[str]:
    out: list[str] = []
    for e in error.errors():
        text = _describe_one(e)
        if text not in out:
            out.append(text)
    return out


def _raise_all(errors: list[str]) -> None:
    if len(errors) == 1:
        raise UserError(errors[0])
    if errors:
        raise UserError(f"{len(errors)} config errors: " + "; ".join(errors))


def build_config(data: dict, resolve_env: bool = True) -> RunConfig:
    """Validate a config dict; every error is listed at once, in one line. `resolve_env=False`
    leaves `$VAR`s as text: for reading a config's prompts and tools (e.g. SFT export) without the
    run's secrets and endpoints."""
    if not isinstance(data, dict):
        raise UserError("a config must be a mapping at the top level")
    raw = redact_secrets(data)
    errors: list[str] = []
    values = swe_agent_compat(data, errors)
    if resolve_env:
        values = resolve_env_refs(values, errors=errors)
        _several_keys(values, errors)
        secrets.remember_config(values)  # resolved secrets are scrubbed from errors and logs from now on
    config = None
    try:
        config = RunConfig.model_validate(values)
    except ValidationError as e:
        errors.extend(_describe(e))
    _raise_all(errors)
    config.raw = raw
    return config


def load_config(paths: list[Path | str], overrides: list[str] | None = None, resolve_env: bool = True) -> RunConfig:
    """Merge the files in order (relative paths in each resolved against its folder), then the
    overrides, then resolve `$VAR`s and validate."""
    if not paths:
        raise UserError("give at least one --config file (see config/ for examples)")
    data: dict = {}
    for path in paths:
        path = Path(path)
        data = deep_merge(data, resolve_paths(_read_yaml(path), Path(os.path.abspath(path)).parent))
    for override in overrides or []:
        data = apply_override(data, override)
    return build_config(data, resolve_env)
