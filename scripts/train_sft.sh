#!/usr/bin/env bash
# Fine-tune the student on SFT records from `sweagent-oec convert` (only flagged turns train).
#
# One device or CPU: plain python. Several GPUs or nodes: `accelerate launch` with a shipped
# config (DeepSpeed ZeRO-3 by default, FSDP2 with ACCELERATE_CONFIG=config/accelerate/fsdp.yaml).
# Every path is a variable with a default; extra arguments go to `sweagent-oec train`, e.g.
#   DATASET=out/sft/dataset OUTPUT_DIR=ckpt/r1 scripts/train_sft.sh --lora --epochs 1
#   NUM_MACHINES=4 MACHINE_RANK=$SLURM_NODEID MAIN_PROCESS_IP=$MASTER_ADDR scripts/train_sft.sh   # on each node
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-Qwen/Qwen2.5-Coder-7B-Instruct}        # a local folder works too (and is required offline)
DATASET=${DATASET:-out/sft/dataset}                     # JSONL or datasets folder written by convert
OUTPUT_DIR=${OUTPUT_DIR:-out/train/student}
TRAIN_CONFIG=${TRAIN_CONFIG:-}                          # optional YAML of TrainConfig keys (flags override it)
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-config/accelerate/deepspeed_zero3.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)}
NUM_MACHINES=${NUM_MACHINES:-1}
MACHINE_RANK=${MACHINE_RANK:-0}
MAIN_PROCESS_IP=${MAIN_PROCESS_IP:-127.0.0.1}
MAIN_PROCESS_PORT=${MAIN_PROCESS_PORT:-29500}
MIXED_PRECISION=${MIXED_PRECISION:-}                    # overrides the accelerate config's (bf16 | no)
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}

args=(train --model "$MODEL" --dataset "$DATASET" --output-dir "$OUTPUT_DIR")
[ -n "$TRAIN_CONFIG" ] && args+=(--config "$TRAIN_CONFIG")
# FSDP checkpoints activations itself (see config/accelerate/fsdp.yaml).
[[ "$ACCELERATE_CONFIG" == *fsdp* ]] && args+=(--no-gradient-checkpointing)

if [ "${GPUS_PER_NODE:-0}" -le 1 ] && [ "$NUM_MACHINES" -eq 1 ]; then
  exec "$PYTHON" -m sweagent_oec.cli "${args[@]}" "$@"
fi
launch=(--config_file "$ACCELERATE_CONFIG")
[ -n "$MIXED_PRECISION" ] && launch+=(--mixed_precision "$MIXED_PRECISION")
exec "$PYTHON" -m accelerate.commands.launch "${launch[@]}" \
  --num_machines "$NUM_MACHINES" --machine_rank "$MACHINE_RANK" \
  --num_processes $((GPUS_PER_NODE * NUM_MACHINES)) \
  --main_process_ip "$MAIN_PROCESS_IP" --main_process_port "$MAIN_PROCESS_PORT" \
  -m sweagent_oec.cli "${args[@]}" "$@"
