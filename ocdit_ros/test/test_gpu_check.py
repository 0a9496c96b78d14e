"""benchmarks/gpu_check.sh, the prepared device script, runs on the CPU at the tiny config."""

import json
import os
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_script_runs_on_cpu_at_the_tiny_config(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--quick", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preset"] == "tiny" and summary["machine"]["device"] == "cpu"
    assert all(s["status"] == "ok" for s in summary["steps"].values()), summary["steps"]
    rows = json.loads((tmp_path / "tab5.json").read_text())
    settings = {(r["dtype"], r["cache"]) for r in rows if "total_s" in r}
    assert settings == {("float32", True), ("float32", False), ("bfloat16", True), ("bfloat16", False)}
    assert all(r["evaluations"] == 3 and 0 <= r["mask_mean"] <= 1 for r in rows)
    means = {(r["dtype"], r["cache"]): r["mask_mean"] for r in rows}
    assert abs(means[("float32", True)] - means[("float32", False)]) < 1e-5  # caching changes nothing
    assert means[("bfloat16", True)] != means[("float32", True)]  # bfloat16 really ran
    node = json.loads((tmp_path / "node_frames.json").read_text())["float32"]
    stages = {s["stage"]: s for s in node["stages"]}
    assert stages["coarse network evaluations"]["evaluations"] == 17 and node["frame_ms"] > 0
    oom = json.loads((tmp_path / "oom_fallback.json").read_text())
    assert oom == {"skipped": "needs CUDA (set_per_process_memory_fraction)"} or torch.cuda.is_available()
