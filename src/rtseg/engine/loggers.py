"""Loggers: the callbacks that record a run (metrics.csv, TensorBoard, and optionally Weights & Biases or MLflow)."""
from __future__ import annotations

import csv
import importlib
import json
import math
from pathlib import Path
from typing import Any

from rtseg.config import ConfigError
from rtseg.engine.callbacks import Callback

__all__ = ["CSVLogger", "TensorBoardLogger", "WandbLogger", "MLflowLogger", "LOGGERS", "build_loggers", "write_summary"]


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics row, less the epoch number (the step they are logged at)."""
    return {k: v for k, v in metrics.items() if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _optional_import(module: str, logger: str, pip: str):
    """Import an optional package, or stop with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"logging.loggers lists {logger!r} but the {module} package is not installed: pip install {pip} "
            f"(or pip install 'rtseg[{logger}]'), or remove {logger!r} from logging.loggers"
        ) from exc


class CSVLogger(Callback):
    """``metrics.csv``: one row per epoch (the whole history, rewritten atomically after each epoch)."""

    main_process_only = True

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        history = trainer.history  # a resumed run's rows include the epochs before the interruption
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
        tmp.replace(self.path)


class TensorBoardLogger(Callback):
    """Scalars of each epoch's row into ``log_dir`` (``OUT/tensorboard``), at step = epoch number."""

    main_process_only = True

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (fails here, not mid-run, when missing)

        self.log_dir = Path(log_dir)
        self.writer = None

    @classmethod
    def from_setting(cls, log_dir: str | Path, setting) -> TensorBoardLogger | None:
        """``train.tensorboard``: true (needs tensorboard), false, or auto (log when tensorboard is installed)."""
        if setting in (False, None, "off"):
            return None
        try:
            return cls(log_dir)
        except ImportError as exc:
            if setting is True:
                raise ConfigError("train.tensorboard=true but tensorboard is not installed (pip install tensorboard, or set train.tensorboard=auto)") from exc
            return None

    def on_train_start(self, trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir))

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        for key, value in _scalars(metrics).items():
            self.writer.add_scalar(key, value, epoch + 1)
        self.writer.flush()

    def on_train_end(self, trainer, summary: dict[str, Any]) -> None:
        self.writer.close()


class WandbLogger(Callback):
    """A Weights & Biases run: the config, each epoch's row (step = epoch number) and the best mIoU (``pip install wandb``)."""

    main_process_only = True

    def __init__(self, project: str = "rtseg", entity: str | None = None, mode: str | None = None, name: str | None = None):
        self.wandb = _optional_import("wandb", "wandb", "wandb")
        self.project, self.entity, self.mode, self.name = project, entity, mode, name
        self.run = None

    def on_train_start(self, trainer) -> None:
        self.run = self.wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, name=self.name or trainer.out_dir.name,
            dir=str(trainer.out_dir), config=trainer.config,
        )

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        self.run.log(_scalars(metrics), step=epoch + 1)

    def on_train_end(self, trainer, summary: dict[str, Any]) -> None:
        if math.isfinite(summary["best_miou"]):
            self.run.summary["best_miou"] = summary["best_miou"]
        self.run.finish()


class MLflowLogger(Callback):
    """An MLflow run: the flattened config as parameters, each epoch's row as metrics (step = epoch number) (``pip install mlflow``)."""

    main_process_only = True

    def __init__(self, experiment: str = "rtseg", tracking_uri: str | None = None, name: str | None = None):
        self.mlflow = _optional_import("mlflow", "mlflow", "mlflow")
        self.experiment, self.tracking_uri, self.name = experiment, tracking_uri, name

    def on_train_start(self, trainer) -> None:
        if self.tracking_uri:
            self.mlflow.set_tracking_uri(self.tracking_uri)
        self.mlflow.set_experiment(self.experiment)
        self.mlflow.start_run(run_name=self.name or trainer.out_dir.name)
        # MLflow keeps parameter values up to 500 characters
        self.mlflow.log_params({k: str(v)[:500] for k, v in _flatten(trainer.config).items()})

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        self.mlflow.log_metrics(_scalars(metrics), step=epoch + 1)

    def on_train_end(self, trainer, summary: dict[str, Any]) -> None:
        if math.isfinite(summary["best_miou"]):
            self.mlflow.log_metric("best_miou", summary["best_miou"])
        self.mlflow.end_run()


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")


def build_loggers(config: dict[str, Any], out_dir: str | Path) -> list[Callback]:
    """The loggers ``logging.loggers`` lists, built now so that a missing package stops the run before any work."""
    out_dir = Path(out_dir)
    lcfg = config.get("logging") or {}
    names = lcfg.get("loggers", ["csv", "tensorboard"]) or []
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ConfigError(f"logging.loggers: {', '.join(map(repr, unknown))} unknown; expected some of {', '.join(LOGGERS)}")
    loggers: list[Callback] = []
    for name in dict.fromkeys(names):
        if name == "csv":
            loggers.append(CSVLogger(out_dir / "metrics.csv"))
        elif name == "tensorboard":
            board = TensorBoardLogger.from_setting(out_dir / "tensorboard", config.get("train", {}).get("tensorboard", "auto"))
            if board is not None:
                loggers.append(board)
        elif name == "wandb":
            w = lcfg.get("wandb") or {}
            loggers.append(WandbLogger(w.get("project") or "rtseg", w.get("entity"), w.get("mode")))
        elif name == "mlflow":
            m = lcfg.get("mlflow") or {}
            loggers.append(MLflowLogger(m.get("experiment") or "rtseg", m.get("tracking_uri")))
    return loggers


def _json_default(obj):
    if isinstance(obj, float) and math.isinf(obj):
        return None
    return str(obj)


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    """``summary.json``, indented; values JSON cannot hold (paths, dtypes) are written as their text."""
    from rtseg.storage import atomic_write_text

    atomic_write_text(path, json.dumps(summary, indent=2, default=_json_default))
