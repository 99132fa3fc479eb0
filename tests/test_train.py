"""`sweagent-oec train`: the loss covers exactly the flagged (expert) turns, and TRL trains on it.

Everything runs on CPU against a tiny Qwen2 model built in the test (no hub).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from sweagent_oec.errors import UserError
from sweagent_oec.serving import free_port
from sweagent_oec.train.config import TrainConfig, load_config
from sweagent_oec.train.dataset import IGNORE_INDEX, build_dataset, encode_record, load_records, normalize_messages, record_tools
from sweagent_oec.train.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "sweagent-oec")


def call(id_, name, args):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def oec_tool_record(n: int = 0) -> dict:
    """Two student turns, then the expert takes over for two turns (tool-calling style)."""
    return {
        "instance_id": f"calc__{n % 4}",
        "source": "oec",
        "switch_step": 2,
        "resolved": True,
        "model": "expert-model",
        "traj_path": f"trajs/calc__{n}.traj",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant.", "train": False},
            {"role": "user", "content": f"PROMPT fix the bug in calc.py number {n}", "train": False},
            {"role": "assistant", "content": "STUDENT-1 let me look", "tool_calls": [call("a", "bash", {"command": "cat calc.py"})], "train": False},
            {"role": "tool", "content": "TOOL-OUT-1 def add(a, b): return a - b", "tool_call_id": "a", "train": False},
            {"role": "assistant", "content": "STUDENT-2 run the tests", "tool_calls": [call("b", "bash", {"command": "pytest -q"})], "train": False},
            {"role": "tool", "content": "TOOL-OUT-2 1 failed", "tool_call_id": "b", "train": False},
            {"role": "assistant", "content": f"EXPERT-1 the sign is wrong {n}", "tool_calls": [call("c", "bash", {"command": "sed -i s/-/+/ calc.py"})], "train": True},
            {"role": "tool", "content": "TOOL-OUT-3 edited", "tool_call_id": "c", "train": False},
            {"role": "assistant", "content": "EXPERT-2 done", "tool_calls": [call("d", "submit", {})], "train": True},
        ],
    }


EXPERT_TOOL_TURNS = [
    'EXPERT-1 the sign is wrong {n}\n<tool_call>\n{{"name": "bash", "arguments": {{"command": "sed -i s/-/+/ calc.py"}}}}\n</tool_call><|im_end|>',
    'EXPERT-2 done\n<tool_call>\n{{"name": "submit", "arguments": {{}}}}\n</tool_call><|im_end|>',
]
XML_STUDENT = "STUDENT-X look\n<function=bash>\n<parameter=command>ls</parameter>\n</function>"
XML_EXPERT = "EXPERT-X fix\n<function=submit>\n</function>"


def oec_xml_record() -> dict:
    """The `xml` action style: actions in the content, observations as user messages."""
    return {
        "instance_id": "xml__1",
        "source": "oec",
        "messages": [
            {"role": "system", "content": "SYSTEM-X tools: bash, submit", "train": False},
            {"role": "user", "content": "PROMPT-X fix it", "train": False},
            {"role": "assistant", "content": XML_STUDENT, "train": False},
            {"role": "user", "content": "OBSERVATION-X calc.py", "train": False},
            {"role": "assistant", "content": XML_EXPERT, "train": True},
        ],
    }


def bc_record() -> dict:
    """No train flags: behavioural cloning, every assistant turn trains."""
    record = oec_xml_record()
    for m in record["messages"]:
        del m["train"]
    return {**record, "source": "bc"}


def trained_runs(tokenizer, input_ids, labels) -> list[str]:
    """Decoded runs of consecutive trained positions; also checks labels equal input_ids there."""
    runs, current = [], []
    for tok, lab in zip(input_ids, labels):
        if lab != IGNORE_INDEX:
            assert lab == tok
            current.append(tok)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


def config(tiny, dataset, out, **kw) -> TrainConfig:
    base = dict(
        model=str(tiny), dataset=str(dataset), output_dir=str(out), max_steps=2, per_device_train_batch_size=2,
        gradient_accumulation_steps=1, gradient_checkpointing=False, logging_steps=1, max_length=2048, learning_rate=1e-3,
    )
    return TrainConfig(**{**base, **kw})


# --- the masks ---------------------------------------------------------------------------------


def test_only_expert_turns_are_trained_tool_style(tokenizer):
    record = oec_tool_record(7)
    enc, info = encode_record(tokenizer, record, max_length=4096)
    assert info == {"bc": False, "truncated": 0, "turns": 2, "tool_calls": True}
    assert trained_runs(tokenizer, enc.input_ids, enc.labels) == [t.format(n=7) for t in EXPERT_TOOL_TURNS]
    # The ids are the model's own chat template rendering, tools included.
    messages = normalize_messages(record["messages"])
    reference = tokenizer.apply_chat_template(messages, tools=record_tools(record, messages), tokenize=True, return_dict=True)
    assert enc.input_ids == reference["input_ids"]
    trained_text = "".join(trained_runs(tokenizer, enc.input_ids, enc.labels))
    for other in ("STUDENT-1", "STUDENT-2", "TOOL-OUT", "PROMPT", "helpful assistant", "<|im_start|>", "assistant\n"):
        assert other not in trained_text


def test_only_expert_turns_are_trained_xml_style(tokenizer):
    enc, _ = encode_record(tokenizer, oec_xml_record(), max_length=4096)
    assert trained_runs(tokenizer, enc.input_ids, enc.labels) == [XML_EXPERT + "<|im_end|>"]


def test_records_without_flags_train_every_assistant_turn(tokenizer, caplog):
    with caplog.at_level(logging.WARNING):
        data, stats = build_dataset(tokenizer, [bc_record(), bc_record(), oec_xml_record()], max_length=4096)
    assert stats.bc_records == 2 and stats.kept == 3 and stats.trained_turns == 5
    assert trained_runs(tokenizer, data[0]["input_ids"], data[0]["labels"]) == [XML_STUDENT + "<|im_end|>", XML_EXPERT + "<|im_end|>"]
    warnings = [r for r in caplog.records if "no `train` flags" in r.getMessage()]
    assert len(warnings) == 1 and "2 record(s)" in warnings[0].getMessage()


def test_trl_batches_carry_our_labels(tiny, tokenizer, tmp_path):
    """What SFTTrainer feeds the model (padded, and padding-free) keeps exactly our trained positions."""
    from sweagent_oec.train.trainer import build_trainer

    data = write_jsonl(tmp_path / "d.jsonl", [oec_tool_record(i) for i in range(3)] + [oec_xml_record()])
    for packing in (False, True):
        trainer, stats = build_trainer(config(tiny, data, tmp_path / f"out{packing}", per_device_train_batch_size=4, packing=packing))
        assert stats.kept == 4 and stats.trained_turns == 7
        batch = next(iter(trainer.get_train_dataloader()))
        runs = []
        for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
            runs += trained_runs(tokenizer, ids, labels)
        expected = [t.format(n=i) for i in range(3) for t in EXPERT_TOOL_TURNS] + [XML_EXPERT + "<|im_end|>"]
        assert sorted(runs) == sorted(expected)
        assert ("position_ids" in batch) == packing  # packing is padding-free: one flat row, no padding


# --- length policies -----------------------------------------------------------------------------


def long_record(expert_last: bool = True) -> dict:
    """Many student turns before the expert's; `expert_last=False` trains the first assistant turn too."""
    record = oec_xml_record()
    m = record["messages"]
    filler = []
    for i in range(12):
        filler += [
            {"role": "assistant", "content": f"STUDENT-LONG {i} " + "look around " * 20, "train": not expert_last and i == 0},
            {"role": "user", "content": f"OBSERVATION {i} " + "output line " * 20, "train": False},
        ]
    record["messages"] = m[:2] + filler + m[2:]
    return record


def test_drop_policy_counts_long_records(tokenizer):
    data, stats = build_dataset(tokenizer, [long_record(), oec_xml_record()], max_length=300)
    assert stats.kept == 1 and stats.dropped == {"longer than max_length": 1} and len(data) == 1


def test_truncate_left_drops_leading_messages_but_never_a_trained_turn(tokenizer):
    record = long_record()
    enc, info = encode_record(tokenizer, record, max_length=300, truncation="truncate_left")
    assert len(enc.input_ids) <= 300 and info["truncated"] > 0
    assert trained_runs(tokenizer, enc.input_ids, enc.labels) == [XML_EXPERT + "<|im_end|>"]
    text = tokenizer.decode(enc.input_ids)
    assert text.startswith("<|im_start|>system\nSYSTEM-X") and "STUDENT-LONG 0 " not in text
    _, stats = build_dataset(tokenizer, [long_record(expert_last=False)], max_length=300, truncation="truncate_left")
    assert stats.kept == 0 and stats.dropped == {"truncate_left would cut a trained turn": 1}


# --- training ------------------------------------------------------------------------------------


def test_loss_decreases_and_the_output_serves(tiny, tmp_path, caplog):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sweagent_oec.train.trainer import SUMMARY_FILE, train

    data = write_jsonl(tmp_path / "d.jsonl", [oec_xml_record(), bc_record()])
    with caplog.at_level(logging.INFO):
        result = train(config(tiny, data, tmp_path / "out", max_steps=10, warmup_steps=0, lr_scheduler_type="constant", learning_rate=1e-2,
                              report_to=["tensorboard"]))
    assert "2 kept" in caplog.text and "tokens:" in caplog.text  # the summary before training
    losses = [h["loss"] for h in json.loads(next((tmp_path / "out").glob("checkpoint-*/trainer_state.json")).read_text())["log_history"] if "loss" in h]
    assert len(losses) == 10 and losses[-1] < 0.5 * losses[0]
    out = result.output_dir
    assert result.serve_command == f"vllm serve {out.resolve()} --served-model-name out --max-model-len 2048"
    assert AutoTokenizer.from_pretrained(out).chat_template and AutoModelForCausalLM.from_pretrained(out)
    assert json.loads((out / SUMMARY_FILE).read_text())["stats"]["trained_turns"] == 3
    # The same losses went to tensorboard.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = (out / "runs").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [round(e.value, 4) for e in events.Scalars("train/loss")] == [round(loss, 4) for loss in losses]


def test_report_to_needs_a_known_installed_logger(tiny, tmp_path, monkeypatch):
    from transformers.integrations import integration_utils

    from sweagent_oec.train.trainer import build_trainer

    data = write_jsonl(tmp_path / "d.jsonl", [oec_xml_record()])
    with pytest.raises(UserError, match=r"^--report-to tensorbored: unknown logger; use one of .*tensorboard.*wandb$"):
        build_trainer(config(tiny, data, tmp_path / "out", report_to=["tensorbored"]))
    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: [])
    with pytest.raises(UserError, match=r"^--report-to comet_ml: its package is not installed; pip install comet-ml \(or drop it\)$"):
        build_trainer(config(tiny, data, tmp_path / "out", report_to=["comet_ml"]))


def test_serve_command_for_tool_calls_and_adapters():
    from sweagent_oec.train.dataset import Stats
    from sweagent_oec.train.trainer import serve_command

    cfg = TrainConfig(model="/m/base", dataset="d", output_dir="/x/out", max_length=4096, lora=True, lora_r=32)
    assert serve_command(cfg, Stats(uses_tool_calls=True), merged=True) == (
        "vllm serve /x/out --served-model-name out --max-model-len 4096 --enable-auto-tool-choice --tool-call-parser hermes"
    )
    assert serve_command(cfg, Stats(), merged=False) == (
        "vllm serve /m/base --enable-lora --lora-modules out=/x/out --max-lora-rank 32 --max-model-len 4096"
    )


def test_lora_trains_and_merges(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from sweagent_oec.train.trainer import train

    data = write_jsonl(tmp_path / "d.jsonl", [oec_xml_record(), bc_record()])
    result = train(config(tiny, data, tmp_path / "out", lora=True, lora_r=4, lora_alpha=8, gradient_checkpointing=True))
    assert (result.output_dir / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(result.output_dir)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert "--enable-lora" not in result.serve_command and "--tool-call-parser" not in result.serve_command


def test_resume_from_checkpoint(tiny, tmp_path):
    from sweagent_oec.train.trainer import train

    data = write_jsonl(tmp_path / "d.jsonl", [oec_xml_record(), bc_record()] * 2)
    first = train(config(tiny, data, tmp_path / "out", max_steps=2, save_steps=2))
    assert first.resumed_from is None and (tmp_path / "out" / "checkpoint-2").is_dir()
    second = train(config(tiny, data, tmp_path / "out", max_steps=4, save_steps=2, resume_from_checkpoint=True))
    assert second.resumed_from.endswith("checkpoint-2") and second.global_step == 4
    state = json.loads((tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]


# --- bad input: one clear line --------------------------------------------------------------------


def test_dataset_without_messages(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"instance_id": "x", "text": "hello"}])
    with pytest.raises(UserError, match=r"record 1 has no `messages`") as e:
        load_records(path)
    assert "\n" not in str(e.value)


def test_dataset_from_save_to_disk_folder(tokenizer, tmp_path):
    import datasets

    records = [oec_tool_record(0), oec_xml_record()]
    # Arrow stores messages as structs: keys a row lacks (tool_calls, tool_call_id) come back as null.
    for r in records:
        for m in r["messages"]:
            m.setdefault("tool_calls", None)
            m.setdefault("tool_call_id", None)
    datasets.Dataset.from_list([oec_tool_record(0), oec_xml_record()]).save_to_disk(str(tmp_path / "ds"))
    loaded = load_records(tmp_path / "ds")
    assert [m.get("tool_calls") for m in loaded[1]["messages"]] == [None] * 5
    from_disk = [encode_record(tokenizer, r, 4096)[0].labels for r in loaded]
    from_json = [encode_record(tokenizer, r, 4096)[0].labels for r in [oec_tool_record(0), oec_xml_record()]]
    assert from_disk == from_json


def test_every_record_too_long_is_an_error(tiny, tmp_path):
    from sweagent_oec.train.trainer import build_trainer

    data = write_jsonl(tmp_path / "d.jsonl", [long_record()])
    with pytest.raises(UserError, match="no trainable records left.*1 longer than max_length"):
        build_trainer(config(tiny, data, tmp_path / "out", max_length=300))


def test_missing_model_and_bad_resume(tmp_path):
    from sweagent_oec.train.trainer import build_trainer, train

    data = write_jsonl(tmp_path / "d.jsonl", [oec_xml_record()])
    with pytest.raises(UserError, match="is not a folder"):
        build_trainer(TrainConfig(model=str(tmp_path / "nope"), dataset=str(data), output_dir=str(tmp_path / "o")))
    with pytest.raises(UserError, match="no checkpoint-\\* folder"):
        train(TrainConfig(model=str(tmp_path / "nope"), dataset=str(data), output_dir=str(tmp_path / "o"), resume_from_checkpoint=True))


def test_yaml_config_and_unknown_key(tmp_path):
    good = tmp_path / "train.yaml"
    good.write_text("model: m\ndataset: d.jsonl\noutput_dir: out\nlora: true\nlora_target_modules: [q_proj, v_proj]\n")
    cfg = load_config(good, output_dir="elsewhere", max_steps=None)
    assert cfg.lora and cfg.lora_target_modules == ["q_proj", "v_proj"] and cfg.output_dir == "elsewhere" and cfg.max_steps == -1
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\ndataset: d\noutput_dir: o\nlearning_rat: 1e-5\n")
    with pytest.raises(UserError, match="learning_rat: Extra inputs"):
        load_config(bad)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model"], "is not a folder"),
        (["--truncation", "cut"], "truncation"),
        (["--dataset", "NOMESSAGES"], "has no `messages`"),
    ],
)
def test_cli_bad_input_is_one_line(tiny, tmp_path, args, message):
    data = write_jsonl(tmp_path / "d.jsonl", [oec_xml_record()])
    nomessages = write_jsonl(tmp_path / "n.jsonl", [{"text": "x"}])
    base = {"--model": str(tiny), "--dataset": str(data), "--output-dir": str(tmp_path / "out")}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = [CLI, "train"] + [x if x != "NOMESSAGES" else str(nomessages) for kv in base.items() for x in kv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr


def test_convert_output_trains_expert_turns_only(tokenizer, tmp_path):
    """The files `convert` writes (JSONL and the datasets folder) feed training as they are."""
    from sweagent_oec.data.convert import Options, Source, convert
    from tests.test_convert import WORK, make_traj, report
    from tests.test_sft import write_traj

    trajs = tmp_path / "trajs"
    write_traj(trajs, "good", make_traj(WORK, 2, task="good"))
    write_traj(trajs, "bc", make_traj(WORK[:2], None, task="bc"))
    convert(Options([Source("main", [trajs], report(tmp_path / "report.json", resolved=["good", "bc"]))], tmp_path / "sft"))
    from_jsonl = sorted(load_records(tmp_path / "sft" / "train.jsonl"), key=lambda r: r["instance_id"])
    from_disk = sorted(load_records(tmp_path / "sft" / "dataset"), key=lambda r: r["instance_id"])
    encoded = [[encode_record(tokenizer, r, 8192)[0] for r in records] for records in (from_jsonl, from_disk)]
    assert [e.input_ids for e in encoded[0]] == [e.input_ids for e in encoded[1]]
    assert [e.labels for e in encoded[0]] == [e.labels for e in encoded[1]]
    bc, good = encoded[0]

    def turn(j):
        args = json.dumps({"command": WORK[j]})
        return f'step {j}\n<tool_call>\n{{"name": "bash", "arguments": {args}}}\n</tool_call><|im_end|>'

    submit = '<tool_call>\n{"name": "submit", "arguments": {}}\n</tool_call><|im_end|>'  # convert's final submit
    assert trained_runs(tokenizer, good.input_ids, good.labels) == [turn(2), turn(3), turn(4), submit]
    assert trained_runs(tokenizer, bc.input_ids, bc.labels) == [turn(0), turn(1), submit]


# --- shipped launch configs and script -------------------------------------------------------------


@pytest.mark.parametrize("name, kind", [("deepspeed_zero3.yaml", "DEEPSPEED"), ("fsdp.yaml", "FSDP")])
def test_accelerate_configs_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "config" / "accelerate" / name))
    assert cfg.distributed_type.value == kind and cfg.mixed_precision == "bf16"


def test_fsdp_config_wraps_the_students_decoder_layers(tiny, monkeypatch):
    """fsdp.yaml as `accelerate launch` turns it into the environment, read back by accelerate's own
    FSDP plugin, whose wrap policy must find the layer class in a Qwen2 model (the students'
    architecture; FSDP itself cannot run on CPU)."""
    import functools

    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from transformers import AutoModelForCausalLM
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    args = launch_command_parser().parse_args(["--config_file", str(REPO / "config" / "accelerate" / "fsdp.yaml"), "train.py"])
    for key, value in prepare_multi_gpu_env(_validate_launch_command(args)[0]).items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.state_dict_type.name == "FULL_STATE_DICT" and plugin.activation_checkpointing
    plugin.set_auto_wrap_policy(AutoModelForCausalLM.from_pretrained(tiny))
    assert isinstance(plugin.auto_wrap_policy, functools.partial)
    assert plugin.auto_wrap_policy.keywords["transformer_layer_cls"] == {Qwen2DecoderLayer}


def run_script(tmp_path, env: dict, *args) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "PYTHON": sys.executable, "GPUS_PER_NODE": "0", "OUTPUT_DIR": str(tmp_path / "out"), **env}
    return subprocess.run([str(REPO / "scripts" / "train_sft.sh"), *args], env=full_env, capture_output=True, text=True, timeout=600)


def test_train_script_passes_paths_through(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [oec_xml_record()])
    proc = run_script(tmp_path, {"MODEL": str(tmp_path / "no-model"), "DATASET": str(data)})
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: model {tmp_path / 'no-model'} is not a folder; pass a local model folder (config.json, weights, tokenizer)"


@pytest.mark.slow
def test_train_script_trains_on_cpu(tiny, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [oec_xml_record(), bc_record()])
    proc = run_script(tmp_path, {"MODEL": str(tiny), "DATASET": str(data)}, "--max-steps", "2", "--max-length", "512", "--no-gradient-checkpointing")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"vllm serve {(tmp_path / 'out').resolve()} --served-model-name out --max-model-len 512" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_train_script_runs_zero3_on_two_processes(tiny, tmp_path, lora):
    """The shipped ZeRO-3 config under `accelerate launch`, two ranks on CPU (gloo): the weights are
    gathered into one checkpoint (or one adapter), and only rank 0 writes the summary and prints."""
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("needs the 'multigpu' extra (deepspeed); CI installs it")
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "d.jsonl", [oec_tool_record(i) for i in range(4)] + [oec_xml_record()])
    env = {"MODEL": str(tiny), "DATASET": str(data), "GPUS_PER_NODE": "2", "MIXED_PRECISION": "no",
           "ACCELERATE_CONFIG": str(REPO / "config" / "accelerate" / "deepspeed_zero3.yaml"), "MAIN_PROCESS_PORT": str(free_port())}
    args = ["--max-steps", "2", "--max-length", "4096", "--batch-size", "2", "--grad-accum", "1", "--lr", "1e-3", "--no-gradient-checkpointing"]
    proc = run_script(tmp_path, env, *args, *(["--lora"] if lora else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = (tmp_path / "out").resolve()
    assert proc.stdout.count("vllm serve") == 1, proc.stdout
    summary = json.loads((out / "oec_train_summary.json").read_text())
    assert summary["launch"] == {"distributed_type": "DEEPSPEED", "num_processes": 2, "mixed_precision": "no"}
    assert summary["global_step"] == 2 and summary["stats"]["kept"] == 5
    if lora:
        assert f"--enable-lora --lora-modules out={out}" in proc.stdout
        adapter = load_file(out / "adapter_model.safetensors")
        b = [v for k, v in adapter.items() if "lora_B" in k]
        assert b and all(v.numel() > 0 for v in b) and any(v.abs().sum() > 0 for v in b)  # gathered and trained
    else:
        assert f"vllm serve {out} --served-model-name out" in proc.stdout
        base, trained = load_file(tiny / "model.safetensors"), load_file(out / "model.safetensors")
        assert trained.keys() == base.keys() and all(trained[k].shape == base[k].shape for k in base)
        assert any(not (trained[k] == base[k]).all() for k in base)


@pytest.mark.slow
def test_train_script_runs_as_two_nodes(tiny, tmp_path):
    """The multi-node path of train_sft.sh: two launches, MACHINE_RANK 0 and 1, one process each,
    meeting at MAIN_PROCESS_IP:PORT (here both on 127.0.0.1), writing one shared output folder."""
    import importlib.util
    import os

    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("needs the 'multigpu' extra (deepspeed); CI installs it")
    data = write_jsonl(tmp_path / "d.jsonl", [oec_tool_record(i) for i in range(4)])
    env = {**os.environ, "PYTHON": sys.executable, "MODEL": str(tiny), "DATASET": str(data), "OUTPUT_DIR": str(tmp_path / "out"),
           "GPUS_PER_NODE": "1", "NUM_MACHINES": "2", "MIXED_PRECISION": "no", "MAIN_PROCESS_IP": "127.0.0.1",
           "MAIN_PROCESS_PORT": str(free_port()), "ACCELERATE_CONFIG": str(REPO / "config" / "accelerate" / "deepspeed_zero3.yaml")}
    args = [str(REPO / "scripts" / "train_sft.sh"), "--max-steps", "2", "--max-length", "4096", "--batch-size", "2", "--grad-accum", "1",
            "--no-gradient-checkpointing"]
    node1 = subprocess.Popen(args, env={**env, "MACHINE_RANK": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        node0 = subprocess.run(args, env={**env, "MACHINE_RANK": "0"}, capture_output=True, text=True, timeout=600)
        out1, err1 = node1.communicate(timeout=120)
    finally:
        node1.kill()
    assert node0.returncode == 0, node0.stderr[-3000:]
    assert node1.returncode == 0, err1[-3000:]
    assert node0.stdout.count("vllm serve") == 1 and "vllm serve" not in out1  # only the global rank 0 speaks
    summary = json.loads((tmp_path / "out" / "oec_train_summary.json").read_text())
    assert summary["launch"]["num_processes"] == 2 and summary["global_step"] == 2


def test_precision_follows_the_accelerate_launcher(monkeypatch):
    from sweagent_oec.train.trainer import _precision

    cfg = TrainConfig(model="m", dataset="d", output_dir="o")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert _precision(cfg)[1] is False
    with pytest.raises(UserError, match=r"^--bf16 conflicts with the accelerate config's mixed_precision: no; change one of them$"):
        _precision(cfg.model_copy(update={"bf16": True}))
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(UserError, match=r"^--fp32 conflicts"):
        _precision(cfg.model_copy(update={"bf16": False}))
    with pytest.raises(UserError, match=r"^bf16 needs a GPU and none is visible; launch with --mixed_precision no"):
        _precision(cfg)  # this machine has no GPU
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(UserError, match=r"^accelerate mixed_precision fp16 is not supported; use bf16 or no"):
        _precision(cfg)


def test_eval_split_holds_out_whole_instances():
    from sweagent_oec.train.trainer import split_eval

    records = [oec_tool_record(i) for i in range(8)]  # 4 instance ids, 2 records each
    cfg = TrainConfig(model="m", dataset="d", output_dir="o", eval_fraction=0.25)
    train_part, eval_part = split_eval(records, cfg)
    held = {r["instance_id"] for r in eval_part}
    assert len(held) == 1 and len(eval_part) == 2 and not held & {r["instance_id"] for r in train_part}
    train_part, eval_part = split_eval(records, cfg.model_copy(update={"eval_ids": ["calc__1", "calc__2"]}))
    assert sorted({r["instance_id"] for r in eval_part}) == ["calc__1", "calc__2"] and len(train_part) == 4
    with pytest.raises(UserError, match="eval_ids not in the dataset"):
        split_eval(records, cfg.model_copy(update={"eval_ids": ["nope"]}))
