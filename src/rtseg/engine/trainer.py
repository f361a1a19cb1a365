"""Training loop and its state: config in, checkpoints and summary out, callbacks (loggers, a paper's schedule) around each epoch; resumable and deterministic per seed; optional EMA of the weights (validated and saved as best) and training-only auxiliary heads."""
from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import DataLoader

from rtseg.card import Metrics, ModelCard, TrainingRecord, card_of, hardware_description
from rtseg.io import CheckpointError, load_checkpoint, load_weights, save_checkpoint, save_weights
from rtseg.config import ConfigError, dump_config, yaml_load
from rtseg.config_defaults import DEFAULTS
from rtseg.data.datasets import build_dataset, dataset_classes
from rtseg.data.labels import CITYSCAPES_CATEGORIES
from rtseg.data.memory import maybe_in_memory
from rtseg.data.normalization import get_normalization
from rtseg.data.sampling import EpochBatchSampler
from rtseg.data.transforms import EvalTransform, TrainTransform
from rtseg.engine.callbacks import Callback, CallbackList
from rtseg.engine.compiled_step import compile_for_training, resolve_train_compile
from rtseg.engine.distributed import DistributedContext
from rtseg.engine.loggers import build_loggers, write_summary
from rtseg.engine.ema import ModelEMA, reestimate_batchnorm
from rtseg.engine.finetune import (
    Freezer, build_teacher, describe_teacher, load_start_aux_heads, load_start_weights, resolve_start_weights, start_config,
)
from rtseg.engine.losses import DeepSupervisionLoss, build_criterion
from rtseg.engine.optim import build_optimizer, build_schedule
from rtseg.engine.precision import forward_loss, optimizer_step, prepare_model, resolve_precision
from rtseg.engine.rng import restore_rng_state, rng_state, seed_everything
from rtseg.engine.stages import load_stage_weights, run_stages
from rtseg.devices import resolve_device
from rtseg.evaluation import EvalProtocol, evaluate_model, protocol_record
from rtseg.data.transformed import TransformedDataset
from rtseg.metrics import ConfusionMatrix
from rtseg.models.aux_heads import build_aux_heads
from rtseg.registry import create_model, get_entry
from rtseg.errors import UserError
from rtseg.storage import atomic_write_text
from rtseg.cpu import check_threads

__all__ = ["Trainer", "TrainingError", "train"]


def worker_start_method(workers: int) -> str | None:
    """How data-loading workers start: forked (the default) unless OpenVINO is loaded in this process, whose
    threads do not survive a fork (the worker crashes with SIGSEGV); then spawned."""
    return "spawn" if workers > 0 and "openvino" in sys.modules else None


class TrainingError(UserError, RuntimeError):
    """A run that cannot go on (a non-finite loss, an unusable config)."""


class Trainer:
    """Runs one training config (a single stage) in ``out_dir``.

    ``init_weights``: a checkpoint to start from (a previous stage's, see :mod:`rtseg.engine.stages`); without it the run
    starts from ``model.weights`` when set (:mod:`rtseg.engine.finetune`: the class layers move to the dataset's classes).
    ``callbacks``: :class:`~rtseg.engine.callbacks.Callback` objects called after the model's own and the
    configured loggers (:mod:`rtseg.engine.callbacks` lists the hooks).

    ``self.model`` is the plain network (saved, validated unless EMA is on); ``self.net`` what the training step runs
    (the network, or ``self.aux``, the :class:`~rtseg.models.aux_heads.AuxiliaryHeads` wrapper of ``model.aux_heads``,
    under DDP when torchrun started the run); ``self.step_net`` the same under ``torch.compile`` when ``train.compile``
    resolved to it, else ``self.net``; ``self.ema`` the :class:`~rtseg.engine.ema.ModelEMA` of ``train.ema``.
    """

    def __init__(
        self, config: dict[str, Any], out_dir: str | Path, resume: bool | str | Path = False, progress: bool = True,
        init_weights: str | Path | None = None, callbacks: Iterable[Callback] = (),
    ):
        self.config = copy.deepcopy(config)
        self.out_dir = Path(out_dir)
        self.progress = progress
        cfg = self.config
        tcfg, dcfg = cfg["train"], cfg["data"]
        if tcfg.get("threads"):
            check_threads(tcfg["threads"], "train.threads")
            torch.set_num_threads(int(tcfg["threads"]))
        self.dist = DistributedContext()
        self.device = self.dist.setup(resolve_device(tcfg.get("device", "auto")))
        self.progress = progress and self.dist.is_main
        try:
            self.precision = resolve_precision(str(tcfg.get("precision", "auto")), self.device, legacy_amp=bool(tcfg.get("amp")))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        seed_everything(int(tcfg["seed"]))

        self.classes = dataset_classes(dcfg)
        mcfg = cfg["model"]
        # model.weights: the card's build options and input shrink apply where the config leaves them open
        self.start = resolve_start_weights(mcfg["name"], mcfg["weights"]) if init_weights is None and mcfg.get("weights") else None
        self.start_report: list[str] = []
        if self.start is not None:
            self.config, self.start_report = start_config(cfg, self.start)
            cfg = self.config
            tcfg, dcfg, mcfg = cfg["train"], cfg["data"], cfg["model"]
        num_classes = mcfg.get("num_classes") or self.classes.num_classes
        self.num_classes = num_classes
        self.model = create_model(mcfg["name"], num_classes=num_classes, **(mcfg.get("options") or {})).to(self.device)
        if init_weights is not None:
            self.init_report = load_stage_weights(self.model, init_weights)
        elif self.start is not None:
            self.start_report += load_start_weights(self.model, self.start, self.classes, mcfg.get("class_map"), mcfg["name"],
                                                    mcfg.get("options") or {})
        model_callbacks = getattr(self.model, "training_callbacks", None)  # a paper's schedule, e.g. gradual grouping
        own = list(model_callbacks(cfg)) if callable(model_callbacks) else []
        self.callbacks = CallbackList(own + build_loggers(cfg, self.out_dir) + list(callbacks), is_main=self.dist.is_main)
        card = self.start.card if self.start is not None else None
        norm = dcfg.get("normalization") or (card.normalization if card is not None else get_entry(mcfg["name"]).normalization)
        self.normalization = norm
        # the outputs are the dataset's classes (any outputs beyond them predict void)
        named = self.classes if self.classes.num_classes <= num_classes else None
        self.model.rtseg_card = card_of(self.model).replace(normalization=get_normalization(norm), classes=named)

        crop_sizes = dcfg.get("crop_sizes")
        size = tuple(dcfg["image_size"]) if dcfg.get("image_size") and dcfg.get("dataset") != "synthetic" else None
        cache = dcfg.get("cache", "auto")
        cache = {False: "off", True: "memory"}.get(cache, cache) if isinstance(cache, bool) else cache  # YAML reads off/on as booleans
        if cache not in ("auto", "memory", "off"):
            raise ConfigError(f"data.cache={cache!r} is not one of auto, memory, off")
        train_base = maybe_in_memory(build_dataset(dcfg, "train"), cache, size, resize_labels=True)
        val_base = maybe_in_memory(build_dataset(dcfg, "val"), cache, size, resize_labels=False)
        self.train_set = TransformedDataset(train_base, TrainTransform(dcfg, norm), seed=int(tcfg["seed"]), crop_sizes=crop_sizes)
        self.val_set = TransformedDataset(val_base, EvalTransform(dcfg, norm), seed=int(tcfg["seed"]))
        self.batch_size = int(tcfg["batch_size"])  # the global batch, split over torchrun processes
        try:
            self.batch_sampler = EpochBatchSampler(
                len(self.train_set.base), self.batch_size, int(tcfg["seed"]), num_crops=len(crop_sizes) if crop_sizes else 1,
                rank=self.dist.rank, world_size=self.dist.world_size,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.iters_per_epoch = len(self.batch_sampler)
        if tcfg.get("max_iters_per_epoch"):
            self.iters_per_epoch = min(self.iters_per_epoch, int(tcfg["max_iters_per_epoch"]))
        self.epochs = int(tcfg["epochs"])

        self.criterion = build_criterion(cfg["loss"], self.train_set.base, num_classes, self.out_dir).to(self.device)
        self.optimizer = build_optimizer(cfg["optimizer"], self.model)
        # every parameter is in the optimizer; frozen ones get no gradient, so it leaves them as they are
        self.freezer = Freezer(self.model, tcfg.get("freeze"), tcfg.get("freeze_epochs"))
        self.freezer.apply(0)
        # model.aux_heads: the network trains inside a wrapper that adds the heads' outputs in training mode;
        # self.model stays the plain network (validation, checkpoints, exports), the heads are kept apart
        try:
            self.aux = build_aux_heads(self.model, mcfg, cfg["loss"], num_classes)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        trained: torch.nn.Module = self.model
        if self.aux is not None:
            if self.start is not None:
                self.start_report += load_start_aux_heads(self.aux, self.start, self.classes, mcfg.get("class_map"))
            self.aux.heads.to(self.device)
            self.criterion = DeepSupervisionLoss(self.criterion, self.aux.aux_weights)
            # the heads' own group, after the network's: lr_scale prefixes keep naming the network's parameters
            self.optimizer.add_param_group({"params": list(self.aux.heads.parameters()), "lr_scale": 1.0})
            trained = self.aux
        # DDP wraps after the optimizer is built: parameter names (lr_scale prefixes) stay those of the model
        try:
            self.net = self.dist.wrap(trained, self.device, bool(tcfg.get("sync_bn")))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.schedule = build_schedule(cfg, self.epochs, self.iters_per_epoch)
        prepare_model(trained, self.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.grad_scaling)
        # train.ema: the average starts from the prepared network (after SyncBN conversion and memory layout)
        try:
            self.ema = ModelEMA(self.model, tcfg["ema"], tcfg.get("ema_bn", DEFAULTS["train"]["ema_bn"])) if tcfg.get("ema") is not None else None
            self.ema_bn_batches = int(tcfg.get("ema_bn_batches", DEFAULTS["train"]["ema_bn_batches"]))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

        # distill: the teacher sees the same batches, in the run's precision and memory layout
        self.distill = build_teacher(cfg.get("distill") or {}, self.classes, get_normalization(norm), self.device, self.precision.channels_last)

        self.start_epoch, self.iteration, self.best_miou, self.history, self.images_seen = 0, 0, -math.inf, [], 0
        if resume:
            path = Path(resume) if isinstance(resume, (str, Path)) else self.out_dir / "last.pt"
            self._restore(path)
            if self.freezer.apply(self.start_epoch):
                self.net = self.dist.rewrap(self.net)
        remaining = max(0, self.epochs - self.start_epoch) * self.iters_per_epoch
        try:
            self.compile = resolve_train_compile(tcfg.get("compile", "auto"), self.device, remaining, self.dist.world_size, changes_layers=bool(own))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        # the compiled module shares the network's parameters; it only runs the training forward
        self.step_net = compile_for_training(self.net) if self.compile.enabled else self.net
        if self.compile.enabled and self.distill is not None:
            # the teacher's forward compiled too: ESPNet at 360x480, batch 8, bf16 took 0.14 s instead of 0.25 (2 threads)
            for net in self.distill.teacher.nets:
                net.model = compile_for_training(net.model)

    # -- checkpoints -------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict[str, Any]:
        """Everything a resume needs beside the weights: the EMA average and the auxiliary heads when on."""
        extra = {}
        if self.ema is not None:
            extra["ema"] = self.ema.state_dict()
        if self.aux is not None:
            extra["aux_heads"] = self.aux.heads.state_dict()
        return {
            **extra,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "iteration": self.iteration,
            "best_miou": self.best_miou,
            "history": self.history,
            "images_seen": self.images_seen,
            "config": self.config,
            "rng": rng_state(),
        }

    def _restore(self, path: Path) -> None:
        if not path.is_file():
            raise TrainingError(f"cannot resume: {str(path)!r} does not exist (train without --resume, or name a checkpoint)")
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as exc:
            best = path.with_name("best.pt")
            hint = (f"; the run's best.pt may be intact: --resume {best} continues from it (the epochs after it are trained again)"
                    if path.name != "best.pt" and best.is_file() else "")
            raise TrainingError(f"cannot resume: {exc}{hint}") from None
        for key, setting in (("ema", "train.ema"), ("aux_heads", "model.aux_heads")):
            wanted = (self.ema if key == "ema" else self.aux) is not None
            if wanted and key not in ckpt:
                raise TrainingError(
                    f"cannot resume from {str(path)!r} with {setting} set: the checkpoint was written without it; "
                    f"resume with the run's own config ({setting} unset) or start a new run"
                )
        # best.pt of an EMA run holds the average as its weights and the trained weights apart
        load_weights(self.model, ckpt.get("trained_model_state", ckpt["model_state"]), strict=True)
        if self.ema is not None:
            try:
                self.ema.load_state_dict(ckpt["ema"])
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
        if self.aux is not None:
            self.aux.heads.load_state_dict(ckpt["aux_heads"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.iteration = int(ckpt["iteration"])
        self.best_miou = float(ckpt["best_miou"])
        self.history = list(ckpt["history"])
        self.images_seen = int(ckpt.get("images_seen", self.iteration * self.batch_size))
        restore_rng_state(ckpt["rng"])

    # -- loop --------------------------------------------------------------------------------
    def _loader(self, dataset, shuffle: bool, epoch: int) -> DataLoader:
        dataset.epoch = epoch
        workers = int(self.config["train"]["num_workers"])
        pin = self.device.type == "cuda"
        context = worker_start_method(workers)
        if shuffle:
            self.batch_sampler.set_epoch(epoch)
            return DataLoader(dataset, batch_sampler=self.batch_sampler, num_workers=workers, pin_memory=pin, multiprocessing_context=context)
        # validation: each process takes every world_size-th image; the confusion matrices are summed
        indices = list(range(self.dist.rank, len(dataset), self.dist.world_size))
        return DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=1, num_workers=workers, pin_memory=pin,
                          multiprocessing_context=context)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        from tqdm.auto import tqdm

        self.net.train()
        self.freezer.hold_statistics()
        loader = self._loader(self.train_set, True, epoch)
        bar = tqdm(total=self.iters_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", disable=not self.progress, leave=False, dynamic_ncols=True)
        total_loss, seen, t0 = 0.0, 0, time.perf_counter()
        for step, (images, labels) in enumerate(loader):
            if step >= self.iters_per_epoch:
                break
            lr = self.schedule.apply(self.optimizer, self.iteration, epoch)
            images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            loss = forward_loss(self.step_net, self.criterion, self.precision, images, labels, self.distill)
            if self.dist.enabled:  # every process stops together when one sees a non-finite loss
                finite = self.dist.sum_(torch.tensor([float(torch.isfinite(loss).item())]))
                if finite.item() < self.dist.world_size:
                    loss = loss.detach() * math.inf
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, iteration {self.iteration}; the run stopped and "
                    f"{self.out_dir / 'last.pt'} still holds the last good epoch. Lower optimizer.lr or check the labels."
                )
            optimizer_step(loss, self.optimizer, self.scaler)
            if self.ema is not None:
                self.ema.update(self.model)
            self.iteration += 1
            step_loss = loss.detach().float().cpu().reshape(1)
            if self.dist.enabled:  # log the mean over the processes: the loss of the global batch
                step_loss = self.dist.sum_(step_loss) / self.dist.world_size
            total_loss += step_loss.item() * images.shape[0] * self.dist.world_size
            seen += images.shape[0] * self.dist.world_size
            self.images_seen += images.shape[0] * self.dist.world_size
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{step_loss.item():.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
            bar.update(1)
        bar.close()
        elapsed = time.perf_counter() - t0
        return {"train_loss": total_loss / max(seen, 1), "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": seen / max(elapsed, 1e-9), "epoch_s": elapsed}

    @property
    def evaluated_model(self) -> torch.nn.Module:
        """The weights validation scores and best.pt holds: the EMA average when ``train.ema`` is on, else the network."""
        return self.ema.module if self.ema is not None else self.model

    def reestimate_ema_statistics(self, epoch: int) -> int:
        """``train.ema_bn=reestimate``: the average's BatchNorm statistics recomputed from ``train.ema_bn_batches``
        training batches, so validation and best.pt score one consistent network. The images are drawn by a
        generator of their own, fixed by (seed, epoch), and augmented as that epoch's: the run's random streams are
        untouched (resume stays exact) and every process of a torchrun run computes the same statistics. Returns
        the number of images used (0 when there is nothing to re-estimate)."""
        if self.ema is None or self.ema.bn != "reestimate":
            return 0
        tcfg = self.config["train"]
        count, size = self.ema_bn_batches, self.batch_size
        base, scales = len(self.train_set.base), len(self.train_set.crop_sizes or [None])
        generator = torch.Generator().manual_seed(int(tcfg["seed"]) * 1_000_003 + epoch)
        self.train_set.epoch = epoch

        def batches():
            for b in range(count):
                # one crop size per batch (multi-scale recipes): batch b takes the sizes in turn
                picks = torch.randint(base, (size,), generator=generator).tolist()
                offset = (b % scales) * base
                yield torch.stack([self.train_set[offset + i][0] for i in picks]).to(self.device)

        keep = self.freezer.paths if self.freezer.frozen else ()  # frozen parts hold their statistics
        return count * size if reestimate_batchnorm(self.ema.module, batches(), keep) else 0

    def validate(self) -> dict[str, Any]:
        loader = self._loader(self.val_set, False, 0)
        ecfg = self.config.get("eval") or {}
        protocol = EvalProtocol(ecfg.get("scales") or [1.0], ecfg.get("flip", False), ecfg.get("window"), ecfg.get("stride"))
        cm = evaluate_model(self.evaluated_model, loader, self.num_classes, self.device, self.classes.ignore_index, progress=self.progress, protocol=protocol)
        if self.dist.enabled:  # each process scored its share of the images
            cm = ConfusionMatrix.from_counts(self.dist.sum_(cm.raw.clone()), cm.ignore_index)
        cats = CITYSCAPES_CATEGORIES if self.num_classes == 19 and self.classes.num_classes == 19 else None
        return cm.summary(self.classes.names if self.classes.num_classes == self.num_classes else None, cats)

    def run(self) -> dict[str, Any]:
        main = self.dist.is_main  # only the first process writes files
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "config.yaml", dump_config(self.config))
        if self.progress:
            print(f"training {self.config['model']['name']} on {self.device}: {self.precision.describe()}, {self.compile.describe()}", flush=True)
            for line in self.start_lines():
                print(line, flush=True)
        self.callbacks.call("on_train_start", self)
        val_every = max(1, int(self.config["train"]["val_every"]))
        last_metrics: dict[str, Any] = {}
        for epoch in range(self.start_epoch, self.epochs):
            if self.freezer.apply(epoch):  # train.freeze_epochs over: the parts train from here on
                self.net = self.dist.rewrap(self.net)
                self.step_net = compile_for_training(self.net) if self.compile.enabled else self.net
                if self.progress:
                    print(f"epoch {epoch + 1}: {', '.join(self.freezer.paths)} released (train.freeze_epochs={self.freezer.epochs})", flush=True)
            self.callbacks.call("on_epoch_start", self, epoch)
            row: dict[str, Any] = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            if (epoch + 1) % val_every == 0 or epoch + 1 == self.epochs:
                self.reestimate_ema_statistics(epoch)
                last_metrics = self.validate()
                row.update(val_miou=last_metrics["miou"], val_pixel_accuracy=last_metrics["pixel_accuracy"])
                # per-class curves: a thin class can stall while the mean still rises (the zoo's pole)
                row.update({f"val_iou/{name}": iou for name, iou in last_metrics["per_class_iou"].items()})
                self.schedule.observe(last_metrics["miou"])
                self.callbacks.call("on_validation", self, epoch, last_metrics)
            self.history.append(row)
            is_best = "val_miou" in row and row["val_miou"] > self.best_miou
            if is_best:
                self.best_miou = row["val_miou"]
            self.callbacks.call("on_epoch_end", self, epoch, row)
            if main:
                extra = self._state(epoch)
                self.model.rtseg_card = self._card(epoch, last_metrics if "val_miou" in row else None)
                save_checkpoint(self.out_dir / "last.pt", self.model, **extra)
                self.callbacks.call("on_checkpoint", self, epoch, self.out_dir / "last.pt")
                if is_best:
                    best = self.evaluated_model
                    if best is not self.model:
                        best.rtseg_card = self.model.rtseg_card
                        extra["trained_model_state"] = self.model.state_dict()  # what --resume from best.pt continues
                    save_checkpoint(self.out_dir / "best.pt", best, **extra, metrics=last_metrics)
                    save_weights(self.out_dir / "best.safetensors", best, best.rtseg_card)
                    self.callbacks.call("on_checkpoint", self, epoch, self.out_dir / "best.pt")
            self.dist.barrier()  # no process runs ahead of a checkpoint being written
            if self.progress:
                msg = f"epoch {epoch + 1}/{self.epochs}  loss {row['train_loss']:.4f}  {row['images_per_s']:.1f} img/s"
                if "val_miou" in row:
                    msg += f"  val mIoU {row['val_miou']:.4f}  pixel acc {row['val_pixel_accuracy']:.4f}"
                print(msg, flush=True)
        summary = {"best_miou": self.best_miou, "precision": self.precision.describe(), "compile": self.compile.describe(), "epochs": self.epochs,
                   "iterations": self.iteration, "images_seen": self.images_seen, "out_dir": str(self.out_dir), "final": last_metrics}
        if self.start is not None:
            summary["start_weights"] = self.start.identity
            summary["start"] = self.start_report
        if self.distill is not None:
            summary["teacher"] = describe_teacher(self.config["distill"])
        if self.freezer:
            summary["freeze"] = self.freezer.describe()
        if main:
            write_summary(self.out_dir / "summary.json", summary)
        self.callbacks.call("on_train_end", self, summary)
        self.dist.barrier()
        return summary

    def start_lines(self) -> list[str]:
        """What the run starts from: the weights and what moved to the new classes, frozen parts, the teacher."""
        lines = list(self.start_report)
        if self.freezer:
            lines.append(self.freezer.describe())
        if self.distill is not None:
            lines.append(f"distilling from {describe_teacher(self.config['distill'])}")
        if self.ema is not None:
            bn = {"reestimate": f"re-estimated from {self.ema_bn_batches} training batches before each validation",
                  "average": "averaged with the weights", "copy": "copied from the trained network"}[self.ema.bn]
            lines.append(f"validating a moving average of the weights (train.ema={self.ema.decay}); its BatchNorm statistics {bn} (train.ema_bn={self.ema.bn})")
        return lines

    def _card(self, epoch: int, metrics: dict[str, Any] | None) -> ModelCard:
        """The model card after ``epoch``: how it was trained so far and, when it was validated, its scores."""
        import rtseg

        dcfg, hardware = self.config["data"], hardware_description(self.device)
        dataset = dcfg["dataset"] + (f" ({Path(dcfg['root']).name})" if dcfg["dataset"] == "folder" else "")
        training = TrainingRecord(
            dataset=dataset, split=dcfg.get("train_split", "train"), images=len(self.train_set.base), recipe=self.config.get("recipe"),
            config=self.config, epochs=epoch + 1, iterations=self.iteration,
            wall_time_s=round(sum(float(r.get("epoch_s", 0.0)) for r in self.history), 1),
            hardware=hardware + (f" x {self.dist.world_size} processes" if self.dist.enabled else ""),
            torch_version=str(torch.__version__), rtseg_version=str(rtseg.__version__),
            start_weights=self.start.identity if self.start is not None else None,
            teacher=describe_teacher(self.config["distill"]) if self.distill is not None else None,
            images_seen=self.images_seen,
        )
        scores: tuple[Metrics, ...] = ()
        if metrics:
            ecfg = self.config.get("eval") or {}
            protocol = EvalProtocol(ecfg.get("scales") or [1.0], ecfg.get("flip", False), ecfg.get("window"), ecfg.get("stride"))
            scores = (Metrics(
                dataset=dataset, split=dcfg.get("val_split", "val"), miou=float(metrics["miou"]), per_class_iou=dict(metrics["per_class_iou"]),
                pixel_accuracy=metrics.get("pixel_accuracy"), images=len(self.val_set.base), epoch=epoch + 1,
                protocol=protocol_record(protocol, dcfg.get("image_size")),
                measured_with=f"rtseg {rtseg.__version__} trainer validation, torch {torch.__version__}, {hardware}",
            ),)
        return card_of(self.model).replace(training=training, metrics=scores)


def _preflight(config: dict[str, Any]) -> None:
    """Start weights, frozen parts and teachers checked for every stage before anything is written."""
    from rtseg.config import stage_config
    from rtseg.engine.finetune import preflight

    stages = config.get("stages")
    for i in range(len(stages) if stages else 1):
        stage = stage_config(config, i) if stages else config
        if i > 0:  # later stages start from the previous stage's weights
            stage = {**stage, "model": {**stage["model"], "weights": None, "class_map": None}}
        preflight(stage)


def _stored_config(out: Path, resume: bool | str | Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The config of the run ``resume`` continues: a named checkpoint's, else the run folder's config.yaml."""
    import yaml

    from rtseg.io import CheckpointError

    if isinstance(resume, (str, Path)) and not isinstance(resume, bool):
        path = Path(resume)
        if not path.is_file():
            return None, None
        try:
            return dict(load_checkpoint(path).get("config") or {}) or None, path
        except (CheckpointError, OSError):
            return None, None  # the trainer's own resume reports an unreadable checkpoint
    path = out / "config.yaml"
    if not path.is_file():
        return None, None
    try:
        stored = yaml_load(path.read_text())
    except (yaml.YAMLError, OSError):
        return None, None
    return (stored if isinstance(stored, dict) else None), path


def _check_resume(config: dict[str, Any], out: Path, resume: bool | str | Path) -> None:
    from rtseg.engine.finetune import resume_conflicts

    stored, where = _stored_config(out, resume)
    if stored is None:
        return
    conflicts = resume_conflicts(stored, config)
    if conflicts:
        raise TrainingError(f"cannot resume from {where}: that run was started with another setup ({'; '.join(conflicts)}); "
                            f"resume with the run's own config, or start a new run (another --out, or --overwrite)")


def _is_writer() -> bool:
    """The process that writes the run's files: rank 0 of a torchrun job, or the only process."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _run_files_exist(out: Path) -> bool:
    from rtseg.engine.run_dir import existing_run_files

    return out.is_dir() and bool(existing_run_files(out))


def train(
    config: dict[str, Any], out_dir: str | Path | None = None, resume: bool | str | Path = False, progress: bool = True,
    callbacks: Iterable[Callback] = (), overwrite: bool = False,
) -> dict[str, Any]:
    """Run a config, with its ``stages`` in order when it has them (each stage starts from the previous one's weights).

    Before any work the config is validated (:func:`rtseg.config_schema.validate_config`, also for configs built in
    Python) and the writing process takes the run folder (:func:`rtseg.engine.run_dir.prepare_run_dir`): a folder
    holding a run is refused unless ``resume`` (continue it) or ``overwrite`` (move it aside and start anew); a second
    run into the same folder fails at once; ``resume`` of a run that finished all its epochs returns its summary and
    writes nothing. ``resume`` may also name a checkpoint to continue from (into a new folder or the run's own).
    ``callbacks`` go to every stage's :class:`Trainer` (each stage calls ``on_train_start`` ... ``on_train_end``).
    """
    from rtseg.config_schema import validate_config
    from rtseg.engine.run_dir import prepare_run_dir

    validate_config(config)
    out = Path(out_dir or config["output"]["dir"].format(recipe=config.get("recipe") or "run"))
    _preflight(config)
    if resume:
        _check_resume(config, out, resume)
    callbacks = list(callbacks)
    run_dir = None
    if _is_writer():
        # --resume CHECKPOINT into a new folder starts that folder anew from the checkpoint
        continue_folder = bool(resume) and (resume is True or _run_files_exist(out))
        run_dir = prepare_run_dir(out, resume=continue_folder, overwrite=overwrite)
        if run_dir.state == "finished" and not config.get("stages"):
            done = run_dir.summary or {}
            if int(done.get("epochs") or 0) >= int(config["train"]["epochs"]):
                run_dir.release()
                done.setdefault("out_dir", str(out))
                return done  # nothing left to train: the finished run's records stay as they are
    try:
        if not config.get("stages"):
            return Trainer(config, out, resume=resume, progress=progress, callbacks=callbacks).run()

        def run_stage(stage_cfg: dict[str, Any], stage_dir: Path, stage_resume: bool, previous: Path | None) -> dict[str, Any]:
            return Trainer(stage_cfg, stage_dir, resume=stage_resume, progress=progress, init_weights=previous, callbacks=callbacks).run()

        return run_stages(config, out, run_stage, resume=bool(resume), progress=progress)
    except BaseException:
        if run_dir is not None and run_dir.state == "new":
            run_dir.discard_if_empty()  # a start that failed before writing anything leaves no folder behind
        raise
    finally:
        if run_dir is not None:
            run_dir.release()
