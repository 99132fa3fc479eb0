#!/usr/bin/env bash
# Score a trained student alone on SWE-bench Verified, the paper's headline number: serve the
# checkpoint with vLLM, run the student (no expert) on every instance in SWE-bench's images, grade
# with SWE-bench's own harness, print the resolve rate with a binomial confidence interval and the
# exit-status table.
#
#   scripts/eval_student.sh CHECKPOINT [-- EXTRA_RUN_BATCH_ARGS ...]
#   SERVE=start scripts/eval_student.sh out/round1/checkpoint     # also start vLLM here, stop it at the end
#   SHARD=3/8 scripts/eval_student.sh CKPT      # one of 8 cluster jobs (generation only), then:
#   STAGE=eval scripts/eval_student.sh CKPT     # once, after all shards: merge, grade, score
#
# Every path and host is a variable with a default:
#   SERVE        print (print the vLLM command; a server must answer at STUDENT_API_BASE) | start | none
#   SERVED_NAME  the model name vLLM serves                      (the checkpoint folder's name)
#   HOST, PORT   where `vllm serve` listens                      (127.0.0.1, 8000)
#   STUDENT_API_BASE  the student's endpoint                     (http://$HOST:$PORT/v1)
#   VLLM         the vLLM command                                (vllm serve)
#   VLLM_ARGS    more `vllm serve` arguments, e.g. "--tensor-parallel-size 4 --max-model-len 32768"
#   CONFIG       the student's run config                        (config/student_swebench.yaml)
#   INSTANCES    SWE-bench instances: HF name, JSON/JSONL or datasets folder (SWE-bench/SWE-bench_Verified)
#   SPLIT        their split, for a HF name or datasets folder   (the loader's: test for SWE-bench)
#   OUTPUT_DIR   trajectories                                    (trajectories/student_<SERVED_NAME>)
#   WORKERS      instances run at once                           (16)
#   SHARD, SLICE, FILTER   as in generate_oec.sh (i/N, start:stop, regex on ids)
#   STAGE        all | generate | eval                           (all; generate when SHARD is set)
#   EVAL_WORKERS, TIMEOUT  grading parallelism and test timeout  (4, 1800)
#   RUN_ID, EVAL_DIR       the evaluation run                    (student_<SERVED_NAME>, logs/run_evaluation)
#   TOTAL        instances in the benchmark, for the rate's denominator (the evaluated + attempted ones)
#   DOCKER_HOST  the engine (default socket; scripts/setup_podman.sh prints one where Docker is missing)
#   OEC          the toolkit's command                           (.venv/bin/sweagent-oec, else sweagent-oec)
# SWE-bench image names: OEC_SWEBENCH_NAMESPACE (swebench; empty: local images), OEC_SWEBENCH_TAG (latest).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "eval_student.sh: $*" >&2; exit 2; }
[ $# -ge 1 ] && [ "$1" != "--" ] || die "usage: scripts/eval_student.sh CHECKPOINT [-- EXTRA_RUN_BATCH_ARGS] (see the header for variables)"
case "$1" in -h|--help) sed -n '2,31p' "$0"; exit 0 ;; esac
CHECKPOINT="$1"; shift
[ "${1:-}" = "--" ] && shift
extra=("$@")

SERVE="${SERVE:-print}"
SERVED_NAME="${SERVED_NAME:-$(basename "$CHECKPOINT")}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
export STUDENT_API_BASE="${STUDENT_API_BASE:-http://$HOST:$PORT/v1}"
VLLM="${VLLM:-vllm serve}"
VLLM_ARGS="${VLLM_ARGS:-}"
CONFIG="${CONFIG:-$ROOT/config/student_swebench.yaml}"
INSTANCES="${INSTANCES:-SWE-bench/SWE-bench_Verified}"
SPLIT="${SPLIT:-}"
split_args=()
[ -n "$SPLIT" ] && split_args=(--split "$SPLIT")
OUTPUT_DIR="${OUTPUT_DIR:-trajectories/student_$SERVED_NAME}"
WORKERS="${WORKERS:-16}"
SHARD="${SHARD:-}"
SLICE="${SLICE:-}"
FILTER="${FILTER:-}"
STAGE="${STAGE:-$([ -n "$SHARD" ] && echo generate || echo all)}"
EVAL_WORKERS="${EVAL_WORKERS:-4}"
TIMEOUT="${TIMEOUT:-1800}"
RUN_ID="${RUN_ID:-student_$SERVED_NAME}"
EVAL_DIR="${EVAL_DIR:-logs/run_evaluation}"
TOTAL="${TOTAL:-}"
if [ -z "${OEC:-}" ]; then
  if [ -x "$ROOT/.venv/bin/sweagent-oec" ]; then OEC="$ROOT/.venv/bin/sweagent-oec"; else OEC="sweagent-oec"; fi
fi
case "$SERVE" in print|start|none) ;; *) die "SERVE must be print, start or none, not '$SERVE'" ;; esac
case "$STAGE" in all|generate|eval) ;; *) die "STAGE must be all, generate or eval, not '$STAGE'" ;; esac
[ "$SERVED_NAME" = "${SERVED_NAME//[[:space:]]/}" ] && [ -n "$SERVED_NAME" ] || die "SERVED_NAME '$SERVED_NAME' must be one word"

# 1. The student's server.
# shellcheck disable=SC2206
serve_cmd=($VLLM "$CHECKPOINT" --served-model-name "$SERVED_NAME" --host "$HOST" --port "$PORT" $VLLM_ARGS)
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true  # its status is the signal's: not this script's
    server_pid=""
  fi
}
if [ "$STAGE" != eval ]; then
  echo "[eval_student] serve the student with:" >&2
  echo "  $(printf '%q ' "${serve_cmd[@]}")" >&2
  if [ "$SERVE" = start ]; then
    mkdir -p "$OUTPUT_DIR"
    "${serve_cmd[@]}" > "$OUTPUT_DIR/vllm.log" 2>&1 &
    server_pid=$!
    trap stop_server EXIT
    echo "[eval_student] started (pid $server_pid, log $OUTPUT_DIR/vllm.log); waiting for $STUDENT_API_BASE/models" >&2
    for _ in $(seq 900); do
      if "${PYTHON:-$ROOT/.venv/bin/python}" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/models", timeout=2)' \
           "$STUDENT_API_BASE" 2>/dev/null; then break; fi
      kill -0 "$server_pid" 2>/dev/null || die "the vLLM server exited; see $OUTPUT_DIR/vllm.log"
      sleep 2
    done
  fi
fi

# 2. The student alone on every instance (resumable; sharded like generate_oec.sh).
if [ "$STAGE" != eval ]; then
  args=(run-batch -c "$CONFIG" -i "$INSTANCES" ${split_args[@]+"${split_args[@]}"} -o "$OUTPUT_DIR" -w "$WORKERS")
  [ -n "$SLICE" ] && args+=(--slice "$SLICE")
  [ -n "$FILTER" ] && args+=(--filter "$FILTER")
  [ -n "$SHARD" ] && args+=(--shard "$SHARD")
  echo "[eval_student] running $SERVED_NAME alone on $INSTANCES -> $OUTPUT_DIR" >&2
  $OEC "${args[@]}" "agent.model.name=hosted_vllm/$SERVED_NAME" ${extra[@]+"${extra[@]}"}
  stop_server
fi
if [ "$STAGE" = generate ]; then
  echo "[eval_student] generation done; once every shard is, grade with: STAGE=eval $0 $CHECKPOINT" >&2
  exit 0
fi

# 3. SWE-bench's grading, then the score.
preds="$EVAL_DIR/$RUN_ID.preds.json"
mkdir -p "$EVAL_DIR"
$OEC merge-preds "$OUTPUT_DIR" --output "$preds"
$OEC eval --instances "$INSTANCES" ${split_args[@]+"${split_args[@]}"} --predictions "$preds" --run-id "$RUN_ID" --output-dir "$EVAL_DIR" \
  --workers "$EVAL_WORKERS" --timeout "$TIMEOUT" --harness swebench
score_args=("$EVAL_DIR/$RUN_ID/report.json" --trajectories "$OUTPUT_DIR")
[ -n "$TOTAL" ] && score_args+=(--total "$TOTAL")
$OEC score "${score_args[@]}"
