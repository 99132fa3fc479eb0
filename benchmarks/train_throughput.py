"""Training throughput of `sweagent-oec train` (packing, padding-free) against plain TRL defaults.

Both runs train the same randomly initialised model (a Qwen2.5-Coder architecture written out as a
Qwen2Config: no hub) on the same masked SFT data (synthetic OEC records of mixed length, tokenized
by sweagent_oec.train.dataset), with the same batch size, precision and gradient checkpointing.
Baseline: TRL's SFTTrainer with its defaults (padded batches). Ours: the SFTConfig that
`sweagent-oec train --packing` builds (bfd packing, padding-free rows). Reported: trained-on
tokens/s (real tokens, as TRL counts them), peak GPU memory, and the ratio (target >= 1.3x).

    python benchmarks/train_throughput.py --size 0.5b          # on a GPU
    python benchmarks/train_throughput.py                      # CPU: a tiny model, exercises the script
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, Qwen2Config, TrainerCallback

from sweagent_oec.train.config import TrainConfig
from sweagent_oec.train.dataset import build_dataset
from sweagent_oec.train.tiny_model import build_tokenizer
from sweagent_oec.train.trainer import sft_args

# Architectures of the Qwen2.5-Coder-Instruct students (their config.json values).
SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2),
}
VOCAB = {"tiny": 2048, "0.5b": 151936, "1.5b": 151936}


def records(n: int, max_turns: int, seed: int = 0) -> list[dict]:
    """OEC-shaped records whose lengths spread like agent trajectories (a few long, many short)."""
    rng = random.Random(seed)
    words = "def return self value test assert import path file line error fix the bug in module".split()
    out = []
    for i in range(n):
        turns = max(2, int(rng.paretovariate(1.2)) % max_turns)
        switch = rng.randint(1, turns - 1)
        messages = [{"role": "system", "content": "You are a coding agent.", "train": False},
                    {"role": "user", "content": "Fix the failing test. " + " ".join(rng.choices(words, k=80)), "train": False}]
        for t in range(turns):
            messages.append({"role": "assistant", "content": " ".join(rng.choices(words, k=rng.randint(20, 120))), "train": t >= switch})
            messages.append({"role": "user", "content": "OBSERVATION:\n" + " ".join(rng.choices(words, k=rng.randint(50, 400))), "train": False})
        messages.pop()  # end on an assistant turn
        out.append({"instance_id": f"bench__{i}", "messages": messages})
    return out


class Clock(TrainerCallback):
    """Wall time and TRL's token count after the warm-up steps, so compilation/allocation is not timed."""

    def __init__(self, warmup: int):
        self.warmup, self.t0, self.tokens0 = warmup, None, 0

    def on_step_end(self, args, state, control, **kw):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if state.global_step == self.warmup:
            self.t0 = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "num_tokens" in logs and state.global_step == self.warmup:
            self.tokens0 = logs["num_tokens"]


def run(name: str, model_config: Qwen2Config, args, dataset, tokenizer, warmup: int, attn: str) -> dict:
    from trl import SFTTrainer

    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        # Random weights through from_pretrained, so attn_implementation is chosen the usual way.
        AutoModelForCausalLM.from_config(model_config).save_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype, attn_implementation=attn)
    clock = Clock(warmup)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    seconds = time.perf_counter() - clock.t0
    tokens = trainer.state.log_history[-2]["num_tokens"] - clock.tokens0
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    result = {"name": name, "tokens_per_s": tokens / seconds, "peak_gib": peak, "steps": args.max_steps - warmup, "attn": attn}
    print(f"{name:>11}: {result['tokens_per_s']:10.0f} tokens/s, peak GPU memory {peak:.2f} GiB, attn={attn}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu = torch.cuda.is_available()
    parser.add_argument("--size", choices=SIZES, default="0.5b" if gpu else "tiny")
    parser.add_argument("--records", type=int, default=256 if gpu else 12)
    parser.add_argument("--max-length", type=int, default=8192 if gpu else 512)
    parser.add_argument("--batch-size", type=int, default=8 if gpu else 4)
    parser.add_argument("--steps", type=int, default=30 if gpu else 4)
    parser.add_argument("--warmup", type=int, default=5 if gpu else 2)
    opts = parser.parse_args()

    tokenizer = build_tokenizer()
    data, stats = build_dataset(tokenizer, records(opts.records, max_turns=30), opts.max_length, "truncate_left")
    print(f"data: {stats.summary()}")
    model_config = Qwen2Config(vocab_size=VOCAB[opts.size], max_position_embeddings=32768, tie_word_embeddings=True,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **SIZES[opts.size])
    try:
        import flash_attn  # noqa: F401

        fast_attn = "flash_attention_2"
    except ImportError:
        fast_attn = "sdpa"  # padding-free rows still work: transformers masks across packed sequences
    common = dict(max_steps=opts.steps, per_device_train_batch_size=opts.batch_size, gradient_accumulation_steps=1,
                  logging_steps=1, save_steps=10**9, report_to="none", use_cpu=not gpu, bf16=gpu, seed=0)
    with tempfile.TemporaryDirectory() as out:
        from trl import SFTConfig

        # Plain TRL: its defaults (padded batches; gradient checkpointing on), the same data and batch size.
        baseline_args = SFTConfig(output_dir=out, max_length=opts.max_length, **common)
        ours_cfg = TrainConfig(model="-", dataset="-", output_dir=out, max_steps=opts.steps, per_device_train_batch_size=opts.batch_size,
                               gradient_accumulation_steps=1, logging_steps=1, save_steps=10**9, max_length=opts.max_length,
                               packing=True, seed=0)
        ours_args = sft_args(ours_cfg, gpu=gpu, bf16=gpu)
        base = run("trl-default", model_config, baseline_args, data, tokenizer, opts.warmup, "sdpa")
        ours = run("oec-packed", model_config, ours_args, data, tokenizer, opts.warmup, fast_attn)
    ratio = ours["tokens_per_s"] / base["tokens_per_s"]
    device = torch.cuda.get_device_name() if gpu else "CPU"
    print(f"{opts.size} on {device}: oec-packed / trl-default = {ratio:.2f}x tokens/s (target >= 1.3x on a GPU); "
          f"peak memory {ours['peak_gib']:.2f} vs {base['peak_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
