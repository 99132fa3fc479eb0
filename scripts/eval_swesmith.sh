#!/usr/bin/env bash
# Evaluate one run's trajectories the SWE-smith way: merge the predictions of one or more
# trajectory folders (shards) into one preds.json, then run the evaluation harness on them.
# It is the chain of the paper's script (SWE-agent's `merge-preds`, then SWE-smith's harness),
# with this toolkit's `merge-preds` and `eval`.
#
#   scripts/eval_swesmith.sh [--runtime local|docker] [TRAJ_DIR ...] [-- EXTRA_EVAL_ARGS ...]
#
# Every path is a variable with a default; set it in the environment to change it:
#   INSTANCES   instances: JSON/JSONL, a `datasets` folder or a HF name   (SWE-bench/SWE-smith)
#   SPLIT       split of a HF dataset or datasets folder                  (the loader's default: train)
#   TRAJ_DIRS   trajectory folders, space-separated; positional args win  (trajectories)
#   RUN_ID      name of the evaluation run                                (first folder's name)
#   PREDS       where the merged predictions go                           ($OUTPUT_DIR/$RUN_ID.preds.json)
#   OUTPUT_DIR  root of evaluation runs                                   (logs/run_evaluation)
#   WORKERS     instances evaluated in parallel                           (4)
#   TIMEOUT     seconds the tests may run per instance                    (1800)
#   RUNTIME     docker (SWE-smith's images) | local (tasks with `local`)  (docker)
#   GRADING     swesmith (SWE-smith's rule) | strict                      (swesmith)
#   DOCKER_HOST the engine's socket, e.g. the one scripts/setup_podman.sh prints (the default socket)
#   OEC         the toolkit's command, may hold arguments (.venv/bin/sweagent-oec, else sweagent-oec)
# Re-running resumes: instances that already have a report from the same settings (harness,
# runtime, grading, image; timeout too for errors) are skipped; an error recorded under other
# settings is evaluated again. Pass -- --redo-existing to redo everything.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

INSTANCES="${INSTANCES:-SWE-bench/SWE-smith}"
SPLIT="${SPLIT:-}"
GRADING="${GRADING:-swesmith}"
OUTPUT_DIR="${OUTPUT_DIR:-logs/run_evaluation}"
WORKERS="${WORKERS:-4}"
TIMEOUT="${TIMEOUT:-1800}"
RUNTIME="${RUNTIME:-docker}"
if [ -z "${OEC:-}" ]; then
  if [ -x "$ROOT/.venv/bin/sweagent-oec" ]; then OEC="$ROOT/.venv/bin/sweagent-oec"; else OEC="sweagent-oec"; fi
fi

dirs=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) [ $# -ge 2 ] || { echo "eval_swesmith.sh: --runtime needs a value (local|docker)" >&2; exit 2; }
               RUNTIME="$2"; shift 2 ;;
    --runtime=*) RUNTIME="${1#--runtime=}"; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    -*) echo "eval_swesmith.sh: unknown option $1 (eval options go after --)" >&2; exit 2 ;;
    *) dirs+=("$1"); shift ;;
  esac
done
if [ ${#dirs[@]} -eq 0 ]; then
  read -r -a dirs <<< "${TRAJ_DIRS:-trajectories}"
fi
for d in "${dirs[@]}"; do
  [ -e "$d" ] || { echo "eval_swesmith.sh: no such trajectory folder or preds file: $d" >&2; exit 2; }
done
RUN_ID="${RUN_ID:-$(basename "$(cd "${dirs[0]}" 2>/dev/null && pwd || echo "${dirs[0]%.*}")")}"
PREDS="${PREDS:-$OUTPUT_DIR/$RUN_ID.preds.json}"

echo "[eval_swesmith] merging ${#dirs[@]} shard(s) -> $PREDS" >&2
$OEC merge-preds "${dirs[@]}" --output "$PREDS"
echo "[eval_swesmith] evaluating run $RUN_ID on $RUNTIME ($GRADING grading) with $WORKERS worker(s)" >&2
split_args=()
[ -n "$SPLIT" ] && split_args=(--split "$SPLIT")
$OEC eval --instances "$INSTANCES" ${split_args[@]+"${split_args[@]}"} --predictions "$PREDS" --run-id "$RUN_ID" \
  --output-dir "$OUTPUT_DIR" --workers "$WORKERS" --timeout "$TIMEOUT" --runtime "$RUNTIME" \
  --grading "$GRADING" --harness swesmith ${extra[@]+"${extra[@]}"}
echo "[eval_swesmith] report: $OUTPUT_DIR/$RUN_ID/report.json" >&2
