#!/usr/bin/env bash
# The default-model recipe, v3 (`small16`, docs/training.md): reproduces the run in training from nothing but Debian's
# sweethome3d-furniture. Every step resumes: run it again after an interruption (a run can span
# sessions; each stage continues from the newest checkpoint in its run folder).
# Usage: tools/train_default_model.sh WORK_DIR   (needs `make venv`; hours on 2 CPU cores, see the card)
# Knobs (environment): RESUME (a folder of run state to continue instead of the committed one),
# TRAIN_SCENES and VAE_SCENES (tools/training_data.sh), COARSE_STEPS (stage 2), REFINE_STEPS
# (stage 3), THREADS (torch threads per run).
set -euo pipefail
work=${1:?usage: tools/train_default_model.sh WORK_DIR}
py=${PY:-.venv/bin/python}
ocdit() { OMP_NUM_THREADS=${THREADS:-1} nice -n 10 "$py" -m ocdit_ros.cli "$@"; }
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST

tools/training_data.sh "$work"  # objects, templates48, synth/val, synth_vae/train, synth/train

cfg=ocdit_ros/config/training/v2
# A run can span sessions: stages not started in WORK yet begin from the committed state (the VAE
# and the newest checkpoints of the other stages). It lives in main's history, not its tree
# (training/STATE): restored once into WORK/resume, unless RESUME names a folder of your own.
resume=${RESUME:-$work/resume}
[ -n "${RESUME:-}" ] || tools/training_state.sh restore "$resume"
for stage in v2/vae v2/coarse v2/refine v2/coarse_prior v2/refine_prior v2/refine_neg v3/backbone v3/coarse_bb; do
    if [ -d "$resume/$stage" ] && [ ! -e "$work/runs/${stage#*/}" ]; then
        mkdir -p "$work/runs" && cp -r "$resume/$stage" "$work/runs/${stage#*/}"
    fi
done
# The VAE run is finished in the committed state; a resumed call would rebuild it from today's
# small16 preset, which has since grown the template prior its checkpoint lacks. Train it only
# when no export exists (a fresh start with RESUME set to an empty folder).
[ -f "$work/runs/vae/model.safetensors" ] || ocdit train vae --config $cfg/vae.yaml --data "$work/synth_vae/train" \
    --out "$work/runs/vae"
# Stage 1: coarse and refine without the template prior. The two diffusion stages are
# independent: run them side by side, one core each. The committed coarse run stopped at step
# 2400 of its 3000-step schedule (the point stage 2 grew from).
ocdit train coarse --config $cfg/coarse.yaml --data "$work/synth/train" --templates "$work/templates48" \
    --init "$work/runs/vae/model.safetensors" --out "$work/runs/coarse" --stop-at 2400 &
coarse=$!
ocdit train refine --config $cfg/refine.yaml --data "$work/synth/train" --templates "$work/templates48" \
    --init "$work/runs/vae/model.safetensors" --out "$work/runs/refine"
wait $coarse
# Stage 2: both networks grown by the template-match prior (init_partial), trained on.
ocdit train coarse --config $cfg/coarse_prior.yaml --data "$work/synth/train" --templates "$work/templates48" \
    --init "$work/runs/coarse/model.safetensors" --out "$work/runs/coarse_prior" ${COARSE_STEPS:+--steps $COARSE_STEPS} &
coarse=$!
ocdit train refine --config $cfg/refine_prior.yaml --data "$work/synth/train" --templates "$work/templates48" \
    --init "$work/runs/refine/model.safetensors" --out "$work/runs/refine_prior" --stop-at 2500
# Stage 3 (refine only): wrong-object queries that name other objects of the same image.
ocdit train refine --config $cfg/refine_neg.yaml --data "$work/synth/train" --templates "$work/templates48" \
    --init "$work/runs/refine_prior/model.safetensors" --out "$work/runs/refine_neg" ${REFINE_STEPS:+--steps $REFINE_STEPS}
wait $coarse
# Stage 4 (v3, coarse only): the ViT pretrained alone by template matching on the same scenes
# (minutes; a finished run is kept), then frozen under coarse stage 2's diffuser, trained on.
v3=ocdit_ros/config/training/v3
[ -f "$work/runs/backbone/model.safetensors" ] || ocdit train backbone --config $v3/backbone.yaml \
    --data "$work/synth/train" --templates "$work/templates48" --out "$work/runs/backbone"
ocdit train coarse --config $v3/coarse_bb.yaml --data "$work/synth/train" --templates "$work/templates48" \
    --init "$work/runs/coarse_prior/model.safetensors" --backbone-init "$work/runs/backbone/model.safetensors" \
    --out "$work/runs/coarse_bb"
cp "$work/runs/coarse_bb/model.safetensors" ocdit_ros/ocdit_ros/weights/default_coarse.safetensors
cp "$work/runs/refine_neg/model.safetensors" ocdit_ros/ocdit_ros/weights/default_refine.safetensors
