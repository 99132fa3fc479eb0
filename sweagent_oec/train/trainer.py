"""Fine-tune a student on SFT records with TRL's SFTTrainer, loss only on the flagged turns.

`build_trainer` loads the model and tokenizer, tokenizes the records into `input_ids` + `labels`
(dataset.py: -100 outside the trained turns; TRL keeps a given `labels` column as it is), splits
off an eval set by instance id, and wires SFTConfig/peft from TrainConfig. `train` runs it, saves
the model with its tokenizer and chat template, and returns the `vllm serve` command for the next
round.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text
from sweagent_oec.train.config import TrainConfig
from sweagent_oec.train.dataset import Stats, build_dataset, load_records

log = logging.getLogger(__name__)

SUMMARY_FILE = "oec_train_summary.json"


@dataclass
class TrainResult:
    output_dir: Path
    stats: Stats
    metrics: dict
    serve_command: str
    global_step: int
    resumed_from: str | None  # the checkpoint training continued from
    main_process: bool = True  # False on the other ranks of a multi-process run (they print nothing)


def _is_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") != 1


def check_model_path(config: TrainConfig) -> None:
    if _is_local(config.model) and not Path(config.model).expanduser().is_dir():
        raise UserError(f"model {config.model} is not a folder; pass a local model folder (config.json, weights, tokenizer)")


def load_tokenizer(config: TrainConfig):
    from transformers import AutoTokenizer

    path = Path(config.model).expanduser()
    check_model_path(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path) if path.is_dir() else config.model)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load the tokenizer of {config.model} ({str(e).splitlines()[0]}); pass a model folder with its tokenizer") from e
    if not tokenizer.chat_template:
        raise UserError(f"model {config.model} has no chat template; use an instruct model or add chat_template.jinja to its folder")
    return tokenizer


def load_model(config: TrainConfig, dtype):
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(str(Path(config.model).expanduser()) if _is_local(config.model) else config.model, **kwargs)
    except (OSError, ValueError, ImportError) as e:
        raise UserError(f"could not load model {config.model} ({str(e).splitlines()[0]}); check the folder and attn_implementation") from e


def check_report_to(config: TrainConfig) -> None:
    """Each logger is one transformers knows and whose package is installed (else a one-line error,
    not a traceback from the callback once the model has loaded)."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

    for name in config.report_to:
        if name not in INTEGRATION_TO_CALLBACK:
            raise UserError(f"--report-to {name}: unknown logger; use one of {', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
        if name not in get_available_reporting_integrations():
            raise UserError(f"--report-to {name}: its package is not installed; pip install {name.replace('_', '-')} (or drop it)")


def split_eval(records: list[dict], config: TrainConfig) -> tuple[list[dict], list[dict]]:
    """Hold out whole instances (never one instance on both sides), by id list or seeded fraction."""
    if config.eval_ids:
        held = set(config.eval_ids)
        unknown = held - {r.get("instance_id") for r in records}
        if unknown:
            raise UserError(f"eval_ids not in the dataset: {sorted(unknown)[:5]}; pass instance ids that the records carry")
    elif config.eval_fraction > 0:
        ids = sorted({str(r.get("instance_id")) for r in records})
        random.Random(config.seed).shuffle(ids)
        held = set(ids[: max(1, round(len(ids) * config.eval_fraction))])
        if len(held) == len(ids):
            raise UserError(f"eval_fraction {config.eval_fraction} holds out all {len(ids)} instances; use a smaller fraction")
    else:
        return records, []
    return [r for r in records if str(r.get("instance_id")) not in held], [r for r in records if str(r.get("instance_id")) in held]


def _precision(config: TrainConfig):
    import torch

    gpu = torch.cuda.is_available()
    # Under `accelerate launch` the config's mixed_precision reaches us in this variable; DeepSpeed
    # refuses a run whose TrainingArguments disagree with it, so follow it or say what conflicts.
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher not in (None, "no", "bf16"):
        raise UserError(f"accelerate mixed_precision {launcher} is not supported; use bf16 or no (--mixed_precision, or MIXED_PRECISION for train_sft.sh)")
    if launcher is not None and config.bf16 is not None and config.bf16 != (launcher == "bf16"):
        flag = "--bf16" if config.bf16 else "--fp32"
        raise UserError(f"{flag} conflicts with the accelerate config's mixed_precision: {launcher}; change one of them")
    if config.bf16 is not None:
        bf16 = config.bf16
    elif launcher is not None:
        bf16 = launcher == "bf16"
    else:
        bf16 = gpu and torch.cuda.is_bf16_supported()
    if bf16 and not gpu:
        where = "; launch with --mixed_precision no (MIXED_PRECISION=no for train_sft.sh)" if launcher else "; drop --bf16 (CPU training runs in fp32)"
        raise UserError(f"bf16 needs a GPU and none is visible{where}")
    return gpu, bf16, (torch.bfloat16 if bf16 else torch.float32)


def _resume(config: TrainConfig) -> str | None:
    if config.resume_from_checkpoint is False:
        return None
    if config.resume_from_checkpoint is True:
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(config.output_dir) if Path(config.output_dir).is_dir() else None
        if last is None:
            raise UserError(f"no checkpoint-* folder in {config.output_dir} to resume from; train without --resume first")
        return last
    if not (Path(config.resume_from_checkpoint) / "trainer_state.json").is_file():
        raise UserError(f"{config.resume_from_checkpoint} is not a checkpoint (no trainer_state.json); pass a checkpoint-* folder")
    return config.resume_from_checkpoint


def sft_args(config: TrainConfig, gpu: bool, bf16: bool, has_eval: bool = False):
    """TRL's SFTConfig for this TrainConfig (also used by benchmarks/train_throughput.py)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=config.output_dir,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        seed=config.seed,
        # Records are already within max_length (dataset.py); TRL only needs it as the packed row length,
        # and refuses padding-free batches without packing when it is set.
        max_length=config.max_length if config.packing else None,
        packing=config.packing,
        padding_free=config.padding_free,
        activation_checkpointing=config.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=bf16,  # TRL defaults to bf16=True, which is slow (or unsupported) on CPU
        use_cpu=not gpu,
        eval_strategy=("steps" if config.eval_steps else "epoch") if has_eval else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to=config.report_to or "none",
        run_name=config.run_name,
    )


def build_trainer(config: TrainConfig):
    """An SFTTrainer ready to `.train()`, and the Stats of the records it trains on."""
    # Cheap checks first: a wrong path should not wait for torch to import.
    records = load_records(config.dataset)
    check_model_path(config)
    check_report_to(config)
    train_records, eval_records = split_eval(records, config)
    from trl import SFTTrainer

    gpu, bf16, dtype = _precision(config)
    tokenizer = load_tokenizer(config)
    train_data, stats = build_dataset(tokenizer, train_records, config.max_length, config.truncation)
    if train_data is None:
        raise UserError(f"no trainable records left in {config.dataset}: {stats.summary()}; raise --max-length or use --truncation truncate_left")
    eval_data = None
    if eval_records:
        eval_data, _ = build_dataset(tokenizer, eval_records, config.max_length, config.truncation)

    args = sft_args(config, gpu, bf16, has_eval=eval_data is not None)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
            task_type="CAUSAL_LM",
        )
    trainer = SFTTrainer(
        model=load_model(config, dtype),
        args=args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return trainer, stats


def serve_command(config: TrainConfig, stats: Stats, merged: bool) -> str:
    """The `vllm serve` line that makes this checkpoint the next round's student."""
    name = config.served_model_name or Path(config.output_dir).name
    if merged:
        cmd = f"vllm serve {Path(config.output_dir).resolve()} --served-model-name {name}"
    else:
        out = Path(config.output_dir).resolve()
        cmd = f"vllm serve {config.model} --enable-lora --lora-modules {name}={out} --max-lora-rank {config.lora_r}"
    cmd += f" --max-model-len {config.max_length}"
    if stats.uses_tool_calls:
        cmd += " --enable-auto-tool-choice --tool-call-parser hermes"  # Qwen2.5's <tool_call> JSON format
    return cmd


def _end_distributed(trainer) -> None:
    """Ranks leave together and close their process group: a rank that exits while another still writes,
    with gloo's threads alive, can abort ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        trainer.accelerator.wait_for_everyone()
        dist.destroy_process_group()


def train(config: TrainConfig) -> TrainResult:
    """Train, save model + tokenizer + summary to output_dir, and return how to serve it."""
    resume = _resume(config)  # fail before the slow part
    trainer, stats = build_trainer(config)
    main = trainer.is_world_process_zero()
    if main:
        log.info("train data: %s", stats.summary())
        if trainer.eval_dataset is not None:
            log.info("eval data: %d records", len(trainer.eval_dataset))
        if resume:
            step = json.loads((Path(resume) / "trainer_state.json").read_text())["global_step"]
            log.info("resuming from %s (step %d)", resume, step)
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(output.metrics)
    if trainer.eval_dataset is not None:
        metrics.update(trainer.evaluate())

    out = Path(config.output_dir)
    merged = not config.lora
    if config.lora and config.merge_lora and trainer.accelerator.num_processes == 1:
        trainer.save_model(str(out / "adapter"))
        if main:
            trainer.model.merge_and_unload().save_pretrained(out)
            trainer.processing_class.save_pretrained(out)
        merged = True
    else:
        # Full fine-tune, or an adapter (sharded runs cannot merge in place: merge on one device later).
        trainer.save_model(str(out))
    command = serve_command(config, stats, merged)
    if main:
        accelerator = trainer.accelerator
        launch = {"distributed_type": accelerator.distributed_type.value, "num_processes": accelerator.num_processes,
                  "mixed_precision": "bf16" if trainer.args.bf16 else "no"}
        summary = {"config": config.model_dump(), "stats": stats.to_dict(), "metrics": metrics, "serve": command,
                   "global_step": output.global_step, "resumed_from": resume, "launch": launch}
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2, default=str))
    _end_distributed(trainer)
    return TrainResult(out, stats, metrics, command, global_step=output.global_step, resumed_from=resume, main_process=main)
