#!/usr/bin/env bash
# The prepared device check: one call, under 8 minutes, JSON results under $OUT.
#   OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh
# Uses the repository's .venv when present (else python3 with torch and ocdit_ros importable).
# Without CUDA it runs the same steps at the tiny config (that is what the CPU test checks).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/ocdit_ros${PYTHONPATH:+:$PYTHONPATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# 7.5 min hard limit; steps stop starting after ${GPU_CHECK_BUDGET_S:-360} s.
exec timeout 450 "$PY" benchmarks/gpu_check.py --out "$OUT" --budget-s "${GPU_CHECK_BUDGET_S:-360}" "$@"
