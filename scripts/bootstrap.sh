#!/usr/bin/env bash
# Make .venv with everything the toolkit and its tests need. Idempotent: a stamp of pyproject.toml's
# hash skips the pip step when nothing changed. Source it or run it; honours $VENV.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${OEC_EXTRAS:-train,analysis,dev}"
# The 'student' extra compiles llama.cpp's server once (pip caches the wheel): portable, on every
# core, without the multimodal library the toolkit never uses (4 min instead of ~10 on 2 cores).
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.oec-stamp"
hash="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
# The stamp is "<pyproject hash>-<extras>": a venv that already has every wanted extra (say, the
# main job's after the test suite's) is not reinstalled; extras installed before are kept in it.
have="$(cat "$stamp" 2>/dev/null || true)"
missing="$(comm -23 <(tr ',' '\n' <<<"$EXTRAS" | sed '/^$/d' | sort -u) <([ "${have%%-*}" = "$hash" ] && tr ',' '\n' <<<"${have#*-}" | sort -u))"
if [ -n "$missing" ]; then
  echo "[bootstrap] installing sweagent-oec[$EXTRAS] into $VENV (under a minute with uv, minutes with pip)" >&2
  # With uv where it can be had (several times faster than pip; it gets pip's index settings), else pip
  # (OEC_NO_UV=1 forces pip): sweagent_oec/installer.py, standard library only, run before the package is.
  # torch pinned first in the list: left to itself a resolver may pick another (multi-GB CUDA) build.
  PYTHONPATH="$ROOT" "$PY" -m sweagent_oec.installer install --python "$VENV/bin/python" \
    --log "$VENV/oec-install.log" -- "torch==2.13.0" -e "$ROOT[$EXTRAS]"
  all="$EXTRAS"; [ "${have%%-*}" = "$hash" ] && all="${have#*-},$EXTRAS"
  echo "$hash-$(tr ',' '\n' <<<"$all" | sed '/^$/d' | sort -u | paste -sd,)" > "$stamp"
fi
# Best effort: the local runtime sandboxes with bubblewrap where it is installed.
if ! command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[bootstrap] installing bubblewrap (sandbox for the local runtime)" >&2
  (apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; }) \
    || echo "[bootstrap] could not install bubblewrap: the local runtime will run unconfined" >&2
fi
# In CI (and OEC_SLOW=1) the viewer's browser test needs Debian's chromium; elsewhere it skips without it.
if { [ "${CI:-}" = "true" ] || [ "${OEC_SLOW:-}" = "1" ]; } && ! command -v chromium >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[bootstrap] installing chromium (the viewer's browser test)" >&2
  (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }) \
    || echo "[bootstrap] could not install chromium: the viewer's browser test will skip" >&2
fi
