#!/usr/bin/env bash
# OEC generation at scale: the paper's setup (Qwen2.5-Coder-32B student on vLLM, Claude expert
# taking over at a step drawn from [0, 30]) over SWE-smith instances in Docker.
# Every path and host is a variable with a default; extra arguments go to run-batch
# (e.g. config overrides like agent.model.seed=1).
#
#   STUDENT_API_BASE=http://gpu-node:8000/v1 ANTHROPIC_API_KEY=... scripts/generate_oec.sh
#   SHARD=3/8 scripts/generate_oec.sh          # one of 8 cluster jobs over the same list
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${CONFIG:-$ROOT/config/qwen32b_switch_claude_python_tools.yaml}"
INSTANCES="${INSTANCES:-SWE-bench/SWE-smith}"        # HF dataset name, JSON/JSONL, or a datasets folder
SLICE="${SLICE:-}"                                  # e.g. 0:1000
FILTER="${FILTER:-}"                                # regex on instance ids
SPLIT="${SPLIT:-}"                                  # split of a HF dataset or datasets folder (default train)
LANGUAGES="${LANGUAGES-python}"                     # only rows in these languages (comma-separated; empty: all)
SKIP_EMPTY="${SKIP_EMPTY:-1}"                       # 1: leave out rows with a blank problem statement
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/trajectories/qwen32b_switch_claude}"
WORKERS="${WORKERS:-16}"
SHARD="${SHARD:-}"
export STUDENT_API_BASE="${STUDENT_API_BASE:-http://127.0.0.1:8000/v1}"
OEC="${OEC:-$ROOT/.venv/bin/sweagent-oec}"
[ -x "$OEC" ] || { OEC_EXTRAS=dev "$ROOT/scripts/bootstrap.sh"; }

args=(run-batch -c "$CONFIG" -i "$INSTANCES" -o "$OUTPUT_DIR" -w "$WORKERS")
[ -n "$SLICE" ] && args+=(--slice "$SLICE")
[ -n "$FILTER" ] && args+=(--filter "$FILTER")
[ -n "$SHARD" ] && args+=(--shard "$SHARD")
[ -n "$SPLIT" ] && args+=(--split "$SPLIT")
[ -n "$LANGUAGES" ] && args+=(--languages "$LANGUAGES")
[ "$SKIP_EMPTY" = 1 ] && args+=(--skip-empty-problem-statements)
exec "$OEC" "${args[@]}" "$@"
