"""benchmarks/gpu/run.sh in its CPU dry run: the script the GPU machine runs works end to end (CUDA steps skipped)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="run.sh needs bash")
def test_gpu_script_dry_run_writes_records_and_table(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--dry-run"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    assert "dry run: 1" in (out / "env.txt").read_text()
    data = json.loads((out / "gpu_bench.json").read_text())
    assert not data["failures"]
    runs = {(r["model"], r["mode"]) for r in data["records"]}
    assert runs == {(m, d) for m in ("espnet-c", "fplnet") for d in ("fp32", "fp16")}
    assert all(r["conditions"]["device"] == "cpu" and r["latency_ms_mean"] > 0 for r in data["records"])
    table = (out / "gpu_bench.md").read_text()
    assert "| espnet-c |" in table and "fp16 16x32 ms (FPS)" in table
    assert "GPU tests skipped" in proc.stdout and "training hook: skipped" in proc.stdout
