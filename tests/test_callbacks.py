"""The trainer's callbacks: a user's callback sees every epoch and validation; loggers (CSV, TensorBoard, W&B, MLflow) plug in."""
import csv
import sys
import types

import pytest
import torch

from rtseg.config import ConfigError, load_config, stage_config
from rtseg.engine.callbacks import Callback
from rtseg.engine.trainer import Trainer, train
from rtseg.metrics import ConfusionMatrix

TINY = [
    "model.name=espnet-c", "model.options={q: 2}", "data.image_size=[32,48]", "data.train_samples=4", "data.val_samples=2",
    "train.batch_size=4", "train.epochs=3", "train.threads=2", "train.val_every=2",
]


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_start(self, trainer):
        self.events.append(("start", trainer.start_epoch))

    def on_epoch_start(self, trainer, epoch):
        self.events.append(("epoch_start", epoch))

    def on_validation(self, trainer, epoch, metrics):
        self.events.append(("validation", epoch, metrics))

    def on_epoch_end(self, trainer, epoch, metrics):
        self.events.append(("epoch_end", epoch, dict(metrics)))

    def on_checkpoint(self, trainer, epoch, path):
        self.events.append(("checkpoint", epoch, path.name, path.is_file()))

    def on_train_end(self, trainer, summary):
        self.events.append(("end", summary["iterations"]))


class FakeRun:
    def __init__(self, calls):
        self.calls, self.summary = calls, {}

    def log(self, data, step):
        self.calls.append(("log", step, data))

    def finish(self):
        self.calls.append(("finish", dict(self.summary)))


def fake_wandb():
    module = types.ModuleType("wandb")
    module.calls = []
    module.init = lambda **kw: module.calls.append(("init", kw)) or FakeRun(module.calls)
    return module


def fake_mlflow():
    module = types.ModuleType("mlflow")
    module.calls = []
    for name in ("set_tracking_uri", "set_experiment", "start_run", "log_params", "log_metrics", "log_metric", "end_run"):
        setattr(module, name, (lambda n: lambda *a, **kw: module.calls.append((n, a, kw)))(name))
    return module


def test_user_callback_and_every_logger_receive_the_epochs_and_validations(tmp_path, monkeypatch):
    wandb, mlflow = fake_wandb(), fake_mlflow()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    cfg = load_config("demo", TINY + ["logging.loggers=[csv, tensorboard, wandb, mlflow]", "train.tensorboard=true",
                                      "logging.mlflow.tracking_uri=file:///nowhere"])
    recorder = Recorder()
    summary = train(cfg, tmp_path, progress=False, callbacks=[recorder])

    kinds = [e[0] for e in recorder.events]
    first_val, last_val = (e[2]["miou"] for e in recorder.events if e[0] == "validation")
    improved = last_val > first_val  # best.pt is written again only when the last epoch beat the first validation
    assert kinds == ["start", "epoch_start", "epoch_end", "checkpoint",  # epoch 1: not validated, only last.pt
                     "epoch_start", "validation", "epoch_end", "checkpoint", "checkpoint",  # epoch 2: first validation, best.pt
                     "epoch_start", "validation", "epoch_end", "checkpoint"] + ["checkpoint"] * improved + ["end"]
    rows = [e[2] for e in recorder.events if e[0] == "epoch_end"]
    with (tmp_path / "metrics.csv").open() as f:
        written = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == [1, 2, 3] and len(written) == 3
    for row, line in zip(rows, written):  # the callback saw exactly the rows of metrics.csv
        assert float(line["train_loss"]) == pytest.approx(row["train_loss"]) and float(line["lr"]) == pytest.approx(row["lr"])
    validations = [e for e in recorder.events if e[0] == "validation"]
    assert [e[1] for e in validations] == [1, 2]  # val_every=2, and the last epoch
    assert validations[-1][2]["miou"] == summary["final"]["miou"] and "per_class_iou" in validations[-1][2]
    assert rows[1]["val_miou"] == validations[0][2]["miou"] and "val_miou" not in rows[0]
    checkpoints = [e for e in recorder.events if e[0] == "checkpoint"]
    assert all(e[3] for e in checkpoints) and {e[2] for e in checkpoints} == {"last.pt", "best.pt"}
    assert recorder.events[-1] == ("end", summary["iterations"])

    assert list((tmp_path / "tensorboard").iterdir())  # event files
    init = next(c for c in wandb.calls if c[0] == "init")[1]
    assert init["project"] == "rtseg" and init["config"]["model"]["name"] == "espnet-c" and init["dir"] == str(tmp_path)
    logged = [(c[1], c[2]) for c in wandb.calls if c[0] == "log"]
    assert [s for s, _ in logged] == [1, 2, 3] and logged[0][1]["train_loss"] == pytest.approx(rows[0]["train_loss"])
    assert wandb.calls[-1] == ("finish", {"best_miou": summary["best_miou"]})
    names = [c[0] for c in mlflow.calls]
    assert names[:4] == ["set_tracking_uri", "set_experiment", "start_run", "log_params"] and names[-1] == "end_run"
    assert mlflow.calls[0][1] == ("file:///nowhere",)
    params = mlflow.calls[3][1][0]
    assert params["model.name"] == "espnet-c" and params["train.epochs"] == "3"
    steps = [c[2]["step"] for c in mlflow.calls if c[0] == "log_metrics"]
    assert steps == [1, 2, 3]
    assert ("log_metric", ("best_miou", summary["best_miou"]), {}) in mlflow.calls


def test_enabled_logger_without_its_package_stops_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # an import of mlflow raises ImportError
    cfg = load_config("demo", TINY + ["logging.loggers=[csv, mlflow]"])
    with pytest.raises(ConfigError, match=r"pip install mlflow"):
        Trainer(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="'comet'.*csv, tensorboard, wandb, mlflow"):
        Trainer(load_config("demo", TINY + ["logging.loggers=[csv, comet]"]), tmp_path / "run", progress=False)


def test_loggers_can_be_turned_off(tmp_path):
    cfg = load_config("demo", TINY + ["train.epochs=1", "logging.loggers=[]", "train.tensorboard=true"])
    t = Trainer(cfg, tmp_path, progress=False)
    assert len(t.callbacks) == 0
    t.run()
    assert (tmp_path / "last.pt").is_file() and not (tmp_path / "metrics.csv").exists() and not (tmp_path / "tensorboard").exists()


def test_gradual_model_brings_its_callback_and_others_do_not(tmp_path):
    from rtseg.models.gradual_grouping import GradualGroupingCallback

    plain = Trainer(load_config("demo", TINY + ["logging.loggers=[]"]), tmp_path / "a", progress=False)
    assert not any(isinstance(cb, GradualGroupingCallback) for cb in plain.callbacks)
    gradual = Trainer(load_config("demo", TINY + ["model.name=essnet-b-dg2", "model.options={gradual_grouping: true}",
                                                  "gradual_grouping={ramp_epochs: 2}", "logging.loggers=[]"]), tmp_path / "b", progress=False)
    (cb,) = gradual.callbacks
    assert isinstance(cb, GradualGroupingCallback) and cb.schedule.ramp_epochs == 2
    cb.on_epoch_start(gradual, 1)
    assert all(float(m.alpha) == 0.5 for m in gradual.model.modules() if hasattr(m, "alpha"))


def test_stage_config_is_the_one_stage_merge():
    cfg = load_config("demo", ["model.options={q: 2}"])
    cfg["stages"] = [{"name": "a", "train": {"epochs": 1}}, {"name": "b", "model": {"name": "espnet"}}]
    first, second = stage_config(cfg, 0), stage_config(cfg, 1)
    assert first["train"]["epochs"] == 1 and first["model"]["options"] == {"q": 2} and "stages" not in first
    assert second["model"] == {**cfg["model"], "name": "espnet", "options": {}}  # options of another network do not carry over
    cfg["stages"][1]["train"] = {"epoch": 2}
    with pytest.raises(ConfigError, match=r"stages\[1\]\.train\.epoch"):
        stage_config(cfg, 1)


def test_confusion_matrices_from_counts_and_merge():
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(torch.tensor([0, 1, 2, 5]), torch.tensor([0, 1, 1, 2]))
    b.update(torch.tensor([2, 2]), torch.tensor([2, 0]))
    summed = ConfusionMatrix.from_counts(a.raw + b.raw)
    a.merge(b)
    assert torch.equal(summed.raw, a.raw) and summed.raw.sum() == 6 and summed.raw[2, 3] == 1
    with pytest.raises(ValueError, match="4-class"):
        a.merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="raw confusion matrix"):
        ConfusionMatrix.from_counts(torch.zeros(3, 3, dtype=torch.int64))
