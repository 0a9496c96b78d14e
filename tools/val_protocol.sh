#!/usr/bin/env bash
# The fixed validation protocol every model decision is made with (docs/training.md): the val
# split only (unseen objects, seed 1), its first 40 images, each asked for the objects in its
# ground truth, the default pipeline config and thresholds. Prints AP, AP50, coarse-only AP/AP50.
# Usage: tools/val_protocol.sh DATA_ROOT COARSE.safetensors REFINE.safetensors OUT.json [ocdit eval options]
set -euo pipefail
data=${1:?usage: tools/val_protocol.sh DATA_ROOT COARSE REFINE OUT.json [options]}
coarse=${2:?coarse weights}; refine=${3:?refine weights}; out=${4:?report path}; shift 4
py=${PY:-.venv/bin/python}
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
OMP_NUM_THREADS=${THREADS:-1} "$py" -m ocdit_ros.cli eval --dataset "$data" --split val --max-images 40 \
    --queries present --weights "$coarse" --refine-weights "$refine" --out "$out" "$@" >/dev/null
"$py" - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
keys = ("ap", "ap50", "ap75", "ap_coarse", "ap50_coarse", "num_gt", "num_predictions")
print(json.dumps({k: r.get(k) for k in keys} | {"s_per_image": r.get("timing", {}).get("mean_seconds_per_image")}))
PY
