#!/usr/bin/env bash
# The default model's training data, from nothing but Debian's sweethome3d-furniture: the object
# library, 48 px templates, val scenes (seed 1) and train scenes (seed 0). Every step keeps what is
# already there, so a second call is quick. Used by tools/train_default_model.sh and
# tools/pack_gpu_data.sh.
# Usage: tools/training_data.sh WORK_DIR   (needs `make venv`; about 10 minutes on one core)
# Knobs (environment): TRAIN_SCENES (scenes of the train split), VAE_SCENES (the first N of them
# train the mask VAE), THREADS (torch threads).
set -euo pipefail
work=${1:?usage: tools/training_data.sh WORK_DIR}
py=${PY:-.venv/bin/python}
ocdit() { OMP_NUM_THREADS=${THREADS:-1} nice -n 10 "$py" -m ocdit_ros.cli "$@"; }
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
train_scenes=${TRAIN_SCENES:-250}
vae_scenes=${VAE_SCENES:-60}

[ -f "$work/objects/objects.json" ] || ocdit data objects --out "$work/objects"
# 48 px templates (6x6 patches of the small16 backbone), rendered with the settings the shipped
# weights record (42 views, pybullet, 144 px renders): what `ocdit eval` and the node render too.
# --renderer pybullet: a machine without pybullet fails here instead of training on rasterised templates.
ocdit templates render "$work/objects/models" --out "$work/templates48" \
    --weights ocdit_ros/ocdit_ros/weights/default_coarse.safetensors --renderer pybullet
ocdit data scenes --split val --num-scenes 40 --seed 1 --out "$work/synth" --objects "$work/objects"
# Scenes are a pure function of (seed, split, index): the VAE trains on the first VAE_SCENES train
# scenes, which are then hard-linked into the full train split instead of being generated twice.
ocdit data scenes --split train --num-scenes "$vae_scenes" --seed 0 --out "$work/synth_vae" --objects "$work/objects"
mkdir -p "$work/synth/train"
for d in "$work"/synth_vae/train/0*; do [ -e "$work/synth/train/${d##*/}" ] || cp -al "$d" "$work/synth/train/"; done
ocdit data scenes --split train --num-scenes "$train_scenes" --seed 0 --out "$work/synth" --objects "$work/objects"
