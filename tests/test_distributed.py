"""torchrun multi-process training on CPU (gloo): 2 processes follow the run of 1 process with the same global batch."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from rtseg.config import load_config
from rtseg.engine.trainer import train
out, *overrides = sys.argv[1:]
cfg = load_config("demo", ["model.name=espnet-c", "model.options={q: 2}", "data.image_size=[48,64]", "data.train_samples=16",
    "data.val_samples=4", "train.batch_size=4", "train.epochs=2", "train.threads=1", "data.hflip=true", "data.scale_range=[0.8,1.2]",
    "data.crop_size=[40,56]", "train.tensorboard=false"] + overrides)
train(cfg, out, progress=False)
"""


def _run(tmp_path, name, nproc):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = tmp_path / name
    if nproc == 1:
        cmd = [sys.executable, str(script), str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    one, one_summary = _run(tmp_path, "one", 1)
    two, two_summary = _run(tmp_path, "two", 2)
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        # same samples and augmentations per step; only BatchNorm sees 2 instead of 4 images per process
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=0.03)
        assert float(b["lr"]) == pytest.approx(float(a["lr"]), rel=1e-9)
    assert float(two[1]["train_loss"]) < 0.7 * float(two[0]["train_loss"])  # it trains
    # validation: each process scored half of the images and the matrices were summed
    assert two_summary["final"]["pixels"] == one_summary["final"]["pixels"] > 0
    assert two_summary["iterations"] == one_summary["iterations"] == 2 * 4
    # only the first process wrote files
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_global_batch_is_split_across_processes():
    from rtseg.data.sampling import EpochBatchSampler

    whole = EpochBatchSampler(10, 4, seed=3, num_crops=2)
    halves = [EpochBatchSampler(10, 4, seed=3, num_crops=2, rank=r, world_size=2) for r in range(2)]
    for s in [whole, *halves]:
        s.set_epoch(5)
    merged = [a + b for a, b in zip(*[list(h) for h in halves])]
    assert merged == list(whole) and len(whole) == 2 * (10 // 4)
    # every batch holds one crop size (entries 0..9 are crop 0, 10..19 crop 1)
    assert all(len({i // 10 for i in batch}) == 1 for batch in whole)
    other = EpochBatchSampler(10, 4, seed=3, num_crops=2)
    other.set_epoch(6)
    assert list(other) != list(whole)
    with pytest.raises(ValueError, match="divisible"):
        EpochBatchSampler(10, 3, seed=0, world_size=2)


@pytest.mark.slow
def test_two_gloo_processes_train_with_ema_and_aux_heads(tmp_path):
    """DDP wraps the auxiliary-head wrapper; each process keeps its average; only the first writes it."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out),
           "train.epochs=1", "train.ema=0.9", "model.aux_heads=[{stage: stage2}]"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from rtseg.io import load_checkpoint

    last = load_checkpoint(out / "last.pt")
    assert last["ema"]["updates"] == 4 and last["aux_heads"]
    assert not any(k.startswith(("heads.", "model.")) for k in last["model_state"])


@pytest.mark.slow
def test_two_gloo_processes_distill_and_release_frozen_parts_mid_run(tmp_path):
    """A teacher on each process; the frozen encoder is released after epoch 1 (DDP re-wrapped to sync its gradients)."""
    from rtseg.data.labels import CITYSCAPES
    from rtseg.io import load_checkpoint, save_weights
    from rtseg.registry import create_model

    teacher = create_model("espnet-c", num_classes=19, q=2)
    save_weights(tmp_path / "teacher.safetensors", teacher, teacher.rtseg_card.replace(classes=CITYSCAPES))
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    runs = {}
    for name, nproc in (("one", 1), ("two", 2)):
        out = tmp_path / name
        launch = [sys.executable, str(script)] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                                    "--nproc_per_node=2", str(script)]
        proc = subprocess.run(launch + [str(out), f"distill.teacher={tmp_path / 'teacher.safetensors'}", "train.freeze=[level1]",
                                        "train.freeze_epochs=1", "train.precision=fp32"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[name] = load_checkpoint(out / "last.pt")["model_state"]
        summary = json.loads((out / "summary.json").read_text())
        assert "teacher.safetensors" in summary["teacher"] and "first 1 epoch" in summary["freeze"]
    # the released level1 trained in epoch 2 on both processes alike: close to the single-process run
    for key in [k for k in runs["one"] if k.startswith("level1.") and k.endswith("weight")]:
        a, b = runs["one"][key], runs["two"][key]
        assert (a - b).abs().max() < 0.05 * a.abs().max() + 1e-3, key
