"""Task: the whole workflow on synthetic street scenes: train a small model, evaluate, benchmark and predict."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from rtseg.config import load_config
from rtseg.data.synthetic import SyntheticScenes
from rtseg.tasks._bench import BenchOptions, bench
from rtseg.tasks.common import Log
from rtseg.tasks._evaluate import evaluate
from rtseg.tasks._predict import predict
from rtseg.tasks._train import train

__all__ = ["demo"]


def demo(out: str | Path = "demo-output", overrides: Sequence[str] = (), *, progress: bool = True, log: Log = Log(),
         on_result: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Trains the ``demo`` recipe (with ``overrides``) into ``out/run`` (resuming an interrupted run), writes
    ``metrics.json`` and ``bench.json`` and overlays of four held-out scenes under ``out``. ``on_result(step, result)``
    sees each step's result as it comes (``metrics``, ``bench``, ``predictions``); all are returned."""
    show = on_result or (lambda step, result: None)
    out = Path(out)
    config = load_config("demo", list(overrides))
    run_dir = out / "run"
    log.info(f"[1/4] training {config['model']['name']} on synthetic street scenes ({config['train']['epochs']} epochs) -> {run_dir}")
    train(config, out=run_dir, resume=(run_dir / "last.pt").is_file(), progress=progress)
    ckpt = run_dir / "best.pt"
    log.info("[2/4] evaluating the best checkpoint on the validation scenes")
    metrics = evaluate(ckpt, log=log)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    show("metrics", metrics)
    log.info("[3/4] benchmarking (CPU, batch 1, 360x640)")
    record = bench(ckpt, BenchOptions(size=(360, 640), device="cpu", warmup=2, iters=10))[0]
    (out / "bench.json").write_text(json.dumps(record, indent=2))
    show("bench", record)
    log.info("[4/4] predicting on held-out scenes")
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    h, w = config["data"]["image_size"]
    scenes = SyntheticScenes(4, (h, w), split="test", seed=config["data"]["seed"])
    for i in range(len(scenes)):
        Image.fromarray(scenes[i][0]).save(inputs / f"scene_{i}.png")
    predicted = predict(ckpt, [inputs], out / "predictions", log=log)
    show("predictions", predicted)
    return {"metrics": metrics, "bench": record, "predictions": predicted, "out": str(out)}
