#!/usr/bin/env bash
# Here, before a GPU call: the default model's training data (tools/training_data.sh) packed into one
# file that travels with the working tree (the device tool's `carry`), about 28 MiB.
# Usage: tools/pack_gpu_data.sh WORK_DIR [PACK]   (PACK default build/gpu_data.tar.gz)
set -euo pipefail
work=${1:?usage: tools/pack_gpu_data.sh WORK_DIR [PACK]}
pack=${2:-build/gpu_data.tar.gz}
py=${PY:-.venv/bin/python}
tools/training_data.sh "$work"
"$py" -m ocdit_ros.cli data pack --data "$work/synth/train" --templates "$work/templates48" --out "$pack"
