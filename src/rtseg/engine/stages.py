"""Staged recipes: run a config's ``stages`` in order, each stage starting from the previous stage's weights.

A stage's config is :func:`rtseg.config.stage_config` (the stage's keys merged over the rest of the recipe). Each
stage writes its own folder ``OUT/<stage name>``; the run's folder holds the whole config (``config.yaml``) and
``summary.json`` with every stage's summary and the final stage's best mIoU and last validation.
Between stages the weights go through the next model's ``adapt_state_dict(state_dict)`` when its class defines
one: ESSNet's cuts the dense pointwise weights of a gradual-grouping stage to the grouped network's blocks. A
network that needs its own hand-over defines that method; neither this runner nor the trainer changes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from rtseg.io import extract_state_dict, load_weights, read_weights
from rtseg.config import dump_config, stage_config
from rtseg.engine.distributed import DistributedContext
from rtseg.engine.loggers import write_summary
from rtseg.storage import atomic_write_text

__all__ = ["stage_name", "load_stage_weights", "run_stages"]

# (stage config, stage folder, resume from its last.pt, weights of the previous stage or None) -> the stage's summary
StageRunner = Callable[[dict[str, Any], Path, bool, "Path | None"], dict[str, Any]]


def stage_name(config: dict[str, Any], index: int) -> str:
    """The folder name of stage ``index``: its ``name``, or ``stage<i+1>``."""
    return config["stages"][index].get("name") or f"stage{index + 1}"


def load_stage_weights(model: nn.Module, path: str | Path):
    """Load the weights of a previous stage into ``model`` (non-strict), adapted by ``model.adapt_state_dict`` if it has one."""
    state = extract_state_dict(read_weights(path)[0], str(path))
    adapt = getattr(model, "adapt_state_dict", None)
    if callable(adapt):
        state = adapt(state)
    return load_weights(model, state, strict=False)


def run_stages(config: dict[str, Any], out: Path, run_stage: StageRunner, resume: bool = False, progress: bool = True,
               is_main: bool | None = None) -> dict[str, Any]:
    """Run every stage into ``out/<stage name>``; with ``resume``, finished stages (those with summary.json) are skipped.

    ``is_main``: this process writes ``out/config.yaml`` and ``out/summary.json`` (default: unless it is a torchrun
    process other than the first).
    """
    stages = config["stages"]
    if is_main is None:
        is_main = DistributedContext().is_main
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", dump_config(config))
    previous: Path | None = None
    results = {}
    for i in range(len(stages)):
        name = stage_name(config, i)
        stage_cfg = stage_config(config, i)
        stage_dir = out / name
        done = stage_dir / "summary.json"
        if resume and done.is_file():
            results[name] = json.loads(done.read_text())
        else:
            stage_resume = bool(resume) and (stage_dir / "last.pt").is_file()
            if progress:
                print(f"== stage {i + 1}/{len(stages)}: {name}", flush=True)
            results[name] = run_stage(stage_cfg, stage_dir, stage_resume, None if stage_resume else previous)
        best = stage_dir / "best.pt"
        previous = best if best.is_file() else stage_dir / "last.pt"
    final = results[stage_name(config, len(stages) - 1)]
    summary = {
        "stages": results, "final_stage": stage_name(config, len(stages) - 1), "best_miou": final.get("best_miou"),
        "final": final.get("final", {}), "out_dir": str(out),
    }
    if is_main:
        write_summary(out / "summary.json", summary)
    return summary
