"""`sweagent-oec train`: flags -> TrainConfig -> trainer.train. Heavy imports stay inside the function."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

_S = "Schedule"
_L = "LoRA"
_D = "Data"
_R = "Runtime"


def _csv(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value is not None else None


def _eval_ids(value: Optional[str]) -> Optional[list[str]]:
    # A file with one id a line, or ids separated by commas.
    if value is None:
        return None
    path = Path(value)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.is_file() else _csv(value)


def train_command(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Local model folder (or hub name where the hub is reachable)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="SFT records: JSONL file or datasets save_to_disk folder."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Where checkpoints and the final model go."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file of TrainConfig keys; flags override it."),
    lora: Optional[bool] = typer.Option(None, "--lora/--full", help="LoRA adapter (peft) or full fine-tune (default: full).", rich_help_panel=_L),
    lora_r: Optional[int] = typer.Option(None, help="LoRA rank (default: 16).", rich_help_panel=_L),
    lora_alpha: Optional[int] = typer.Option(None, help="LoRA alpha (default: 32).", rich_help_panel=_L),
    lora_dropout: Optional[float] = typer.Option(None, help="LoRA dropout (default: 0.05).", rich_help_panel=_L),
    lora_target_modules: Optional[str] = typer.Option(None, help="Comma-separated module names, or all-linear (default: all-linear).", rich_help_panel=_L),
    merge_lora: Optional[bool] = typer.Option(None, "--merge-lora/--no-merge-lora", help="Merge the adapter into the saved weights (default: merge).", rich_help_panel=_L),
    num_train_epochs: Optional[float] = typer.Option(None, "--epochs", help="Epochs (default: 3).", rich_help_panel=_S),
    max_steps: Optional[int] = typer.Option(None, help="Stop after N optimizer steps (overrides epochs).", rich_help_panel=_S),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default: 5e-5).", rich_help_panel=_S),
    lr_scheduler_type: Optional[str] = typer.Option(None, "--scheduler", help="transformers scheduler name (default: cosine).", rich_help_panel=_S),
    warmup_steps: Optional[float] = typer.Option(None, "--warmup", help="< 1: share of total steps, >= 1: steps (default: 0.05).", rich_help_panel=_S),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay (default: 0).", rich_help_panel=_S),
    per_device_train_batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Records per device per step (default: 1).", rich_help_panel=_S),
    gradient_accumulation_steps: Optional[int] = typer.Option(None, "--grad-accum", help="Gradient accumulation steps (default: 8).", rich_help_panel=_S),
    seed: Optional[int] = typer.Option(None, help="Seed for training and the eval split (default: 42).", rich_help_panel=_S),
    max_length: Optional[int] = typer.Option(None, help="Max tokens per record (default: 32768).", rich_help_panel=_D),
    truncation: Optional[Literal["drop", "truncate_left"]] = typer.Option(None, help="Longer records: drop them, or truncate_left (drop leading messages after the system prompt; never a trained turn) (default: drop).", rich_help_panel=_D),
    packing: Optional[bool] = typer.Option(None, "--packing/--no-packing", help="Pack records into max_length rows (padding-free) (default: no).", rich_help_panel=_D),
    padding_free: Optional[bool] = typer.Option(None, "--padding-free/--no-padding-free", help="Flatten batches without padding (default: no).", rich_help_panel=_D),
    eval_fraction: Optional[float] = typer.Option(None, help="Share of instance ids held out for eval (default: 0).", rich_help_panel=_D),
    eval_ids: Optional[str] = typer.Option(None, help="Held-out instance ids: a file (one a line) or comma-separated.", rich_help_panel=_D),
    eval_steps: Optional[int] = typer.Option(None, help="Evaluate every N steps (default: every epoch).", rich_help_panel=_D),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing", help="(default: on)", rich_help_panel=_R),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--fp32", help="(default: bf16 on a GPU that supports it, fp32 otherwise)", rich_help_panel=_R),
    attn_implementation: Optional[str] = typer.Option(None, help="sdpa, flash_attention_2, eager (default: model default).", rich_help_panel=_R),
    resume: Optional[str] = typer.Option(None, help="'latest' (newest checkpoint in output dir) or a checkpoint folder.", rich_help_panel=_R),
    save_steps: Optional[int] = typer.Option(None, help="Checkpoint every N steps (default: 500).", rich_help_panel=_R),
    save_total_limit: Optional[int] = typer.Option(None, help="Checkpoints kept (default: 2).", rich_help_panel=_R),
    logging_steps: Optional[int] = typer.Option(None, help="Log every N steps (default: 10).", rich_help_panel=_R),
    report_to: Optional[str] = typer.Option(None, help="Comma-separated: wandb, tensorboard (default: console only).", rich_help_panel=_R),
    run_name: Optional[str] = typer.Option(None, help="Run name for wandb/tensorboard.", rich_help_panel=_R),
    served_model_name: Optional[str] = typer.Option(None, help="Name in the printed vllm serve command (default: output dir name).", rich_help_panel=_R),
) -> None:
    """Fine-tune a student on SFT records (TRL), training only the turns flagged `train: true`."""
    from rich.console import Console

    from sweagent_oec.train.config import load_config

    cfg = load_config(
        config,
        model=model,
        dataset=dataset,
        output_dir=output_dir,
        lora=lora,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_target_modules=lora_target_modules if lora_target_modules in (None, "all-linear") else _csv(lora_target_modules),
        merge_lora=merge_lora,
        num_train_epochs=num_train_epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        lr_scheduler_type=lr_scheduler_type,
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        seed=seed,
        max_length=max_length,
        truncation=truncation,
        packing=packing,
        padding_free=padding_free,
        eval_fraction=eval_fraction,
        eval_ids=_eval_ids(eval_ids),
        eval_steps=eval_steps,
        gradient_checkpointing=gradient_checkpointing,
        bf16=bf16,
        attn_implementation=attn_implementation,
        resume_from_checkpoint=(True if resume == "latest" else resume),
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        logging_steps=logging_steps,
        report_to=_csv(report_to),
        run_name=run_name,
        served_model_name=served_model_name,
    )
    from sweagent_oec.train.trainer import train

    result = train(cfg)
    if not result.main_process:
        return
    console = Console()
    console.print(f"model saved to {result.output_dir}; serve it as the next student with:", highlight=False)
    console.print(result.serve_command, highlight=False, soft_wrap=True)
