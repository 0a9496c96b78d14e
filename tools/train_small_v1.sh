#!/usr/bin/env bash
# Reproduce the shipped default model `small` v1 (ocdit_ros/weights/MODEL_CARD.md) from nothing but Debian's
# sweethome3d-furniture. Every step resumes: run it again after an interruption.
# Usage: tools/train_default_model.sh WORK_DIR   (needs `make venv`; about 2.5 h on 2 CPU cores)
set -euo pipefail
work=${1:?usage: tools/train_default_model.sh WORK_DIR}
py=${PY:-.venv/bin/python}
ocdit() { OMP_NUM_THREADS=${THREADS:-1} "$py" -m ocdit_ros.cli "$@"; }
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST

[ -f "$work/objects/objects.json" ] || ocdit data objects --out "$work/objects"
ocdit data scenes --split train --num-scenes "${TRAIN_SCENES:-450}" --seed 0 --out "$work/synth" --objects "$work/objects"
ocdit data scenes --split val --num-scenes 40 --seed 1 --out "$work/synth" --objects "$work/objects"
ocdit data scenes --split test --num-scenes 60 --seed 2 --out "$work/synth" --objects "$work/objects"
ocdit templates render "$work/objects/models" --out "$work/templates" --views 42 --size 42 --render-size 128 \
    --renderer pybullet
cfg=ocdit_ros/config/training
ocdit train vae --config $cfg/vae.yaml --data "$work/synth/train" --out "$work/runs/vae"
# The two diffusion stages are independent: run them side by side, one core each.
ocdit train coarse --config $cfg/coarse.yaml --data "$work/synth/train" --templates "$work/templates" \
    --init "$work/runs/vae/model.safetensors" --out "$work/runs/coarse" &
ocdit train refine --config $cfg/refine.yaml --data "$work/synth/train" --templates "$work/templates" \
    --init "$work/runs/vae/model.safetensors" --out "$work/runs/refine"
wait
cp "$work/runs/coarse/model.safetensors" ocdit_ros/ocdit_ros/weights/default_coarse.safetensors
cp "$work/runs/refine/model.safetensors" ocdit_ros/ocdit_ros/weights/default_refine.safetensors
