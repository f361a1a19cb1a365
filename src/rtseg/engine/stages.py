"""Staged recipes: run a config's ``stages`` in order, each stage starting from the previous stage's weights.

A stage's config is :func:`rtseg.config.stage_config` (the stage's keys merged over the rest of the recipe).
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
from rtseg.config import stage_config

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


def run_stages(config: dict[str, Any], out: Path, run_stage: StageRunner, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every stage into ``out/<stage name>``; with ``resume``, finished stages (those with summary.json) are skipped."""
    stages = config["stages"]
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
    return {"stages": results, "out_dir": str(out)}
