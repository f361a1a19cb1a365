"""Task: train from a config file or packaged recipe, into the config's output folder unless told another."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from rtseg.config import load_config
from rtseg.progress import progress_enabled

__all__ = ["train", "output_dir"]


def output_dir(config: Mapping[str, Any]) -> Path:
    """The config's ``output.dir`` with ``{recipe}`` filled in (``run`` for a config without a recipe name)."""
    return Path(config["output"]["dir"].format(recipe=config.get("recipe") or "run"))


def train(config: str | Path | Mapping[str, Any], overrides: Sequence[str] = (), *, out: str | Path | None = None,
          resume: bool | str | Path = False, progress: bool = True, overwrite: bool = False,
          weights: str | Path | None = None) -> dict[str, Any]:
    """Trains ``config`` (a YAML file, a recipe name, or a loaded config) with ``key=value`` ``overrides`` and returns
    the run's summary with ``out_dir`` set. ``resume``: True continues from ``out/last.pt``, a path from that
    checkpoint. A folder that already holds a run is refused unless ``resume`` or ``overwrite`` (the old run is moved
    to a ``.replaced-<time>`` subfolder); see :func:`rtseg.engine.trainer.train`. ``weights``: start from trained weights
    (sets ``model.weights``: a tag of the model, a URL or a file)."""
    from rtseg.engine.trainer import train as run_training

    if isinstance(config, Mapping):
        if overrides:
            from rtseg.config import apply_overrides

            config = apply_overrides(dict(config), list(overrides))
        loaded = dict(config)
    else:
        loaded = load_config(config, list(overrides))
    if weights is not None:
        loaded = {**loaded, "model": {**loaded["model"], "weights": str(weights)}}
    out_path = Path(out) if out else output_dir(loaded)
    with progress_enabled(progress):  # label scans and class counting stay quiet under --quiet
        summary = run_training(loaded, out_path, resume=resume, progress=progress, overwrite=overwrite)
    summary.setdefault("out_dir", str(out_path))
    return summary
