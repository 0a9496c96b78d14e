"""tools/gpu_train.sh, the one-call GPU training script, runs here on the CPU at a tiny size.

It packs hand-made scenes with `ocdit data pack`, trains both stages from the shipped weights on a
few-second budget with the GPU machine's missing packages unimportable, and the weights that come
back load and segment.
"""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ocdit_ros.model import load_model
from ocdit_ros.model.default import default_weights
from ocdit_ros.model.weights import read_state_dict

from handmade_data import write_scene, write_templates

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def test_gpu_train_script_trains_both_stages_on_a_budget_and_the_weights_segment(tmp_path):
    rng = np.random.default_rng(3)
    for k, objects in enumerate([(1, 2), (2, 3)]):  # each scene lacks an object: the wrong-object queries
        split = write_scene(tmp_path / "data", rng, objects, h=96, w=128, images=2, scene_id=k)
    write_templates(tmp_path / "templates", objects=(1, 2, 3, 4), size=48)
    pack = tmp_path / "pack.tar.gz"
    made = subprocess.run([sys.executable, "-m", "ocdit_ros.cli", "data", "pack", "--data", str(split),
                           "--templates", str(tmp_path / "templates"), "--out", str(pack)],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["objects"] == 3 and json.loads(made.stdout)["images"] == 4
    with tarfile.open(pack) as tar:
        names = tar.getnames()
    assert "templates/obj_000004.npz" not in names  # only the objects the scenes show travel
    assert "scenes0/000001/rgb/000001.png" in names and "scenes0/000000/scene_gt.json" in names

    py = tmp_path / "python"  # the GPU machine has no ROS, pybullet, trimesh or pycocotools
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "without_ros.py"}" "$@"\n')
    py.chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PACK": str(pack), "PY": str(py), "MINUTES": "0.15", "BATCH": "2",
           "WORKERS": "1", "DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "", "WORK": str(tmp_path / "work"),
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", str(REPO / "tools" / "gpu_train.sh")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "coarse.out", "coarse_log.jsonl", "gpu_coarse.safetensors", "gpu_refine.safetensors", "refine.out",
        "refine_log.jsonl", "summary.json"])
    for stage, shipped in zip(("coarse", "refine"), default_weights()):
        s = summary["stages"][stage]
        # The budget, not the 200000-step cap, ended the run, and the schedule was fitted to it.
        assert s["weights"] and 1 <= s["steps"] < 1000 and s["fitted_steps"] == s["steps"], s
        assert np.isfinite(s["last_loss"])
        rows = [json.loads(line) for line in (out / f"{stage}_log.jsonl").read_text().splitlines()]
        assert rows[-1]["step"] == s["steps"] and any("fitted_steps" in r for r in rows)
        trained = load_model(out / f"gpu_{stage}.safetensors")
        assert trained.config.to_dict() == load_model(shipped).config.to_dict()  # the shipped design, trained on
        before, after = read_state_dict(shipped), read_state_dict(out / f"gpu_{stage}.safetensors")
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("diffuser."))

    from ocdit_ros.pipeline.build import build_segmenter
    from ocdit_ros.templates.archive import load_template_dir

    segmenter = build_segmenter(out / "gpu_coarse.safetensors", out / "gpu_refine.safetensors")
    image = np.asarray(Image.open(split / "000000" / "rgb" / "000000.png").convert("RGB"))
    result = segmenter.segment(image, load_template_dir(tmp_path / "work" / "data" / "templates"))
    assert result.image_size == image.shape[:2]
    assert all(inst.mask.shape == image.shape[:2] for inst in result.instances)


def test_gpu_train_names_a_missing_pack(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PACK": str(tmp_path / "none.tar.gz")}
    run = subprocess.run(["bash", str(REPO / "tools" / "gpu_train.sh")], env=env, capture_output=True, text=True)
    assert run.returncode == 2 and "tools/pack_gpu_data.sh" in run.stderr
