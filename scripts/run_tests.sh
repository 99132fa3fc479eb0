#!/usr/bin/env bash
# The test suite (the README's test command; .ci/run runs exactly this).
# Bootstraps .venv (and bubblewrap, where it can), then pytest. The default run skips tests marked
# slow; with CI=true (or OEC_SLOW=1) they run too. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
args=()
if [ "${CI:-}" = "true" ] || [ "${OEC_SLOW:-}" = "1" ]; then
  # The slow tests include the main job, whose local student needs the 'student' extra, and a
  # two-process ZeRO-3 run on CPU, which needs 'multigpu' (deepspeed); the Ray cluster tests need 'ray'.
  export OEC_EXTRAS="train,analysis,dev,student,multigpu,ray"
  args=(-m "slow or not slow")
fi
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "${args[@]}" "$@"
