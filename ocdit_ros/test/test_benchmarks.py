"""`make bench`'s frame profile (benchmarks/pipeline.py) runs and its numbers add up.

A benchmark, not a timed test: only the report's structure and internal consistency are checked
(the FLOPs torch counts against the analytic count for the config, the evaluation count).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("weights", ["none", "default"])  # a random tiny model, the shipped model
def test_pipeline_profile_runs_and_its_flops_match_the_analytic_count(tmp_path, weights):
    out = tmp_path / "profile.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "pipeline.py"), "--weights", weights, "--model-config", "tiny",
           "--device", "cpu", "--image", "60", "80", "--objects", "2", "--repeats", "1", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    coarse = stages["coarse network evaluations"]
    assert coarse["evaluations"] == 17  # 9 Heun steps
    assert abs(coarse["gflop_measured"] - coarse["gflop_analytic"]) <= 0.02 * coarse["gflop_analytic"]
    assert 0 < report["network_share"] <= 1
    refine = stages["refine network evaluations"]
    assert abs(refine["gflop_measured"] - refine["gflop_analytic"]) <= 0.02 * refine["gflop_analytic"]
    assert "| **frame** |" in proc.stdout
