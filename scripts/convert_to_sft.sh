#!/usr/bin/env bash
# Build the SFT set the way the paper did: resolved OEC trajectories (expert turns trained,
# student turns kept as masked context) mixed with resolved expert-only (BC) trajectories,
# looping trajectories dropped, and every record rewritten into the student's inference prompt
# and action style (XML function calls for the paper's Qwen student).
#
#   scripts/convert_to_sft.sh [-- EXTRA_CONVERT_ARGS ...]
#
# Every path is a variable with a default; set it in the environment to change it:
#   OEC_DIR         OEC trajectories (<id>/<id>.traj)                       (trajectories/oec)
#   OEC_REPORT      their evaluation report (aggregate or per-instance)     (logs/run_evaluation/oec/report.json)
#   BC_DIR          expert-only trajectories; empty: OEC data only          (trajectories/bc)
#   BC_REPORT       their evaluation report                                 (logs/run_evaluation/bc/report.json)
#   STUDENT_CONFIG  the student's run config (its prompt and parse style)   (config/qwen32b_switch_claude_python_tools.yaml)
#   INSTANCES       the runs' instances (file, datasets folder, HF name): the task message is
#                   re-rendered from the student's template; empty: kept as the model saw it (empty)
#   OUT             output folder                                           (data/sft)
#   OEC_WEIGHT, BC_WEIGHT  sampling weights of the two sources              (1, 1)
#   MAX_PER_INSTANCE  records kept per instance; empty: no cap              (empty)
#   HELDOUT         file of held-out instance ids; empty: none              (empty)
#   TOKENIZER       local tokenizer folder for token counts; empty: none    (empty)
#   SEED            seed for weights, the cap and the shuffle               (0)
#   OEC             the toolkit's command (.venv/bin/sweagent-oec, else sweagent-oec)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

OEC_DIR="${OEC_DIR:-trajectories/oec}"
OEC_REPORT="${OEC_REPORT:-logs/run_evaluation/oec/report.json}"
BC_DIR="${BC_DIR-trajectories/bc}"
BC_REPORT="${BC_REPORT:-logs/run_evaluation/bc/report.json}"
STUDENT_CONFIG="${STUDENT_CONFIG:-$ROOT/config/qwen32b_switch_claude_python_tools.yaml}"
INSTANCES="${INSTANCES:-}"
OUT="${OUT:-data/sft}"
OEC_WEIGHT="${OEC_WEIGHT:-1}"
BC_WEIGHT="${BC_WEIGHT:-1}"
MAX_PER_INSTANCE="${MAX_PER_INSTANCE:-}"
HELDOUT="${HELDOUT:-}"
TOKENIZER="${TOKENIZER:-}"
SEED="${SEED:-0}"
if [ -z "${OEC:-}" ]; then
  if [ -x "$ROOT/.venv/bin/sweagent-oec" ]; then OEC="$ROOT/.venv/bin/sweagent-oec"; else OEC="sweagent-oec"; fi
fi

extra=()
case "${1:-}" in
  --) shift; extra=("$@") ;;
  -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
  "") ;;
  *) echo "convert_to_sft.sh: unknown argument $1 (convert options go after --)" >&2; exit 2 ;;
esac

args=(--source "oec=$OEC_DIR:$OEC_REPORT" --weight "oec=$OEC_WEIGHT")
if [ -n "$BC_DIR" ]; then
  args+=(--source "bc=$BC_DIR:$BC_REPORT" --weight "bc=$BC_WEIGHT")
fi
args+=(--student-config "$STUDENT_CONFIG" --output "$OUT" --seed "$SEED")
[ -n "$MAX_PER_INSTANCE" ] && args+=(--max-per-instance "$MAX_PER_INSTANCE")
[ -n "$INSTANCES" ] && args+=(--instances "$INSTANCES")
[ -n "$HELDOUT" ] && args+=(--heldout "$HELDOUT")
[ -n "$TOKENIZER" ] && args+=(--tokenizer "$TOKENIZER")

echo "[convert_to_sft] $OEC_DIR${BC_DIR:+ + $BC_DIR} -> $OUT" >&2
$OEC convert "${args[@]}" ${extra[@]+"${extra[@]}"}
echo "[convert_to_sft] records: $OUT/train.jsonl, $OUT/dataset; counts: $OUT/stats.json; dropped: $OUT/dropped.jsonl" >&2
