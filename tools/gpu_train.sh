#!/usr/bin/env bash
# One call on a lent GPU machine trains the default model's two diffusion stages, side by side,
# from the shipped weights (the EMA exports of the committed run state), with bf16 autocast and
# several data workers, each on a time budget (docs/training.md, "Train your own on one GPU").
#
#   here:  tools/pack_gpu_data.sh WORK                        -> build/gpu_data.tar.gz
#   there: OUT=DIR tools/gpu_train.sh                         (carry build/gpu_data.tar.gz)
#
# Needs python3 with torch, numpy, safetensors, pyyaml and pillow; nothing is installed or
# downloaded (the package runs from the tree). Writes to $OUT: gpu_coarse.safetensors,
# gpu_refine.safetensors, {coarse,refine}_log.jsonl, {coarse,refine}.out, summary.json.
# Knobs (environment): MINUTES (training budget per stage, default 6.5: the call ends within
# 9 minutes), PACK, BATCH, WORKERS, DEVICE (default cuda when present), CONFIGS (folder with
# coarse.yaml and refine.yaml, default ocdit_ros/config/training/gpu), PY, WORK (unpack folder).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
py=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
out=${OUT:?set OUT to the folder that comes back}
pack=${PACK:-build/gpu_data.tar.gz}
configs=${CONFIGS:-ocdit_ros/config/training/gpu}
minutes=${MINUTES:-}
work=${WORK:-$(mktemp -d /tmp/ocdit_gpu.XXXXXX)}
weights=ocdit_ros/ocdit_ros/weights
export PYTHONPATH="$PWD/ocdit_ros${PYTHONPATH:+:$PYTHONPATH}" ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# Two training processes and their data workers share the cores: the main processes mostly launch
# GPU work, so a few threads each, not one per core (the workers already use one).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
[ -f "$pack" ] || { echo "gpu_train: no data pack $pack: make it here with tools/pack_gpu_data.sh WORK and carry it" >&2; exit 2; }
mkdir -p "$out" "$work/data"
tar -xzf "$pack" -C "$work/data"
data=("$work"/data/scenes*)

train() {  # stage init
    local stage=$1 init=$2 args=()
    [ -n "$minutes" ] && args+=(--max-minutes "$minutes")
    [ -n "${BATCH:-}" ] && args+=(--batch-size "$BATCH")
    [ -n "${WORKERS:-}" ] && args+=(--num-workers "$WORKERS")
    [ -n "${DEVICE:-}" ] && args+=(--device "$DEVICE")
    "$py" -m ocdit_ros.cli train "$stage" --config "$configs/$stage.yaml" --data "${data[@]}" \
        --templates "$work/data/templates" --init "$init" --out "$work/runs/$stage" "${args[@]}" \
        > "$out/$stage.out" 2>&1
}
train coarse "$weights/default_coarse.safetensors" & coarse=$!
train refine "$weights/default_refine.safetensors" & refine=$!
status=0
wait $coarse || { status=1; echo "gpu_train: coarse failed, see $out/coarse.out" >&2; tail -20 "$out/coarse.out" >&2; }
wait $refine || { status=1; echo "gpu_train: refine failed, see $out/refine.out" >&2; tail -20 "$out/refine.out" >&2; }
for stage in coarse refine; do
    [ -f "$work/runs/$stage/model.safetensors" ] && cp "$work/runs/$stage/model.safetensors" "$out/gpu_$stage.safetensors"
    [ -f "$work/runs/$stage/log.jsonl" ] && cp "$work/runs/$stage/log.jsonl" "$out/${stage}_log.jsonl"
done
"$py" - "$out" "$pack" "$(( $(date +%s) - start ))" <<'PY'
import json, platform, sys
from pathlib import Path

import torch

out, pack, wall = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
summary = {"wall_seconds": wall, "pack": pack, "python": platform.python_version(), "torch": torch.__version__,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "stages": {}}
for stage in ("coarse", "refine"):
    log = out / f"{stage}_log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    train = [r for r in rows if "loss" in r]
    fitted = [r["fitted_steps"] for r in rows if "fitted_steps" in r]
    summary["stages"][stage] = {
        "weights": (out / f"gpu_{stage}.safetensors").is_file(), "steps": train[-1]["step"] if train else 0,
        "fitted_steps": fitted[-1] if fitted else None, "first_loss": train[0]["loss"] if train else None,
        "last_loss": train[-1]["loss"] if train else None,
        "examples_per_second": train[-1].get("examples_per_second") if train else None}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
PY
exit $status
