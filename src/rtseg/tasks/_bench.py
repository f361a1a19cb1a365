"""Task: parameters, MACs/FLOPs and latency (or training throughput) of models, with the conditions measured under."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from rtseg.card import card_of
from rtseg.devices import DeviceError
from rtseg.engine.compiled_step import MIN_ITERATIONS, resolve_train_compile
from rtseg.efficiency import COUNTED_OPERATIONS, count_flops, count_parameters, measure_latency
from rtseg.errors import OptionError
from rtseg.inference import load_model
from rtseg.registry import list_models
from rtseg.data.image_io import check_size
from rtseg.tasks.common import Optimization, check_inference_precision, optimized
from rtseg.tasks.options import check_count, check_device
from rtseg.cpu import check_threads

__all__ = ["BenchOptions", "bench", "bench_one"]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class BenchOptions:
    """How to time: input ``size`` (H, W), device, CPU threads, batch, warm-up and timed iterations, the input
    dtype of plain PyTorch, the backend, ``train`` (time training steps instead of inference), ``optimize`` (time
    the ``rtseg.optimize`` result with these choices), ``precision`` (inference with optimize or OpenVINO; the
    trainer's ``train.precision`` with ``train``) and ``train_compile`` (the trainer's ``train.compile`` with ``train``)."""

    size: tuple[int, int] = (512, 1024)
    device: str = "cpu"
    threads: int | None = None
    batch: int = 1
    warmup: int = 5
    iters: int = 20
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    num_classes: int | None = None
    backend: Literal["torch", "onnxruntime", "openvino"] = "torch"
    weights: str | None = None  # a tag, URL or file for a registered model name (as rtseg eval --weights)
    train: bool = False
    optimize: Optimization | None = None
    precision: str | None = None
    train_compile: str = "off"

    def check(self, model: str | Path = "") -> None:
        """Stop before any work on options that do not go together or a device that is not there."""
        check_threads(self.threads, "--threads")
        check_count(self.batch, "--batch")
        check_count(self.warmup, "--warmup", minimum=0)
        check_count(self.iters, "--iters")
        check_count(self.num_classes, "--num-classes")
        check_size(self.size, "--size")
        check_device(self.device)
        if self.dtype not in _DTYPES:
            raise OptionError(f"dtype {self.dtype!r} is not one of {', '.join(_DTYPES)}")
        openvino = self.backend == "openvino" or str(model).endswith(".xml")
        check_inference_precision(self.precision, optimize=self.optimize is not None, openvino=openvino, train=self.train)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise DeviceError("--device cuda was asked for but CUDA is not available on this machine; use --device cpu")
        if self.train:  # the decision the timing will make, taken here so that a bad combination stops first
            try:
                compiled = resolve_train_compile(self.train_compile, torch.device(self.device), MIN_ITERATIONS)
            except ValueError as exc:
                raise OptionError(f"--compile {self.train_compile}: {exc}") from None
            if compiled.enabled and self.warmup < 1:
                raise OptionError(f"--compile {self.train_compile} with --train needs --warmup 1 or more: the first warm-up step compiles")


def bench_one(model: str | Path, options: BenchOptions = BenchOptions()) -> dict[str, Any]:
    """The record of one model (a registered name, checkpoint or weights file) under ``options``."""
    net = load_model(model, weights=options.weights, num_classes=options.num_classes)
    size, o = options.size, options
    record: dict[str, Any] = {"model": str(model), "card": card_of(net).summary(), "params": count_parameters(net)}
    if options.weights:
        record["weights"] = str(options.weights)
    record.update(count_flops(net, size, 1))
    if o.train:
        from rtseg.efficiency import measure_training_throughput

        num_classes = getattr(net, "num_classes", None) or o.num_classes
        record.update(measure_training_throughput(net, num_classes, size, o.batch, o.precision or "auto", o.device, o.warmup, o.iters, o.threads,
                                                   o.train_compile))
        return record
    if o.backend == "onnxruntime":
        from rtseg.deploy.ort import measure_ort_latency

        record.update(measure_ort_latency(net, size, o.batch, o.warmup, o.iters, o.threads, o.device))
        record["flops_counted_operations"] = COUNTED_OPERATIONS
        return record
    if o.backend == "openvino":
        from rtseg.deploy.openvino_backend import measure_openvino_latency

        record.update(measure_openvino_latency(net, size, o.batch, o.warmup, o.iters, o.threads, o.precision or "fp32", o.device))
        record["flops_counted_operations"] = COUNTED_OPERATIONS
        return record
    if o.optimize is not None:
        net = optimized(net, o.optimize, o.device, size)
        record["optimization"] = net.rtseg_optimization.summary()
    record["flops_counted_operations"] = COUNTED_OPERATIONS
    record["flops_batch"] = 1
    record.update(measure_latency(net, size, o.batch, o.device, o.warmup, o.iters, _DTYPES[o.dtype], o.threads))
    if o.optimize is not None and net.rtseg_optimization.precision != "fp32":
        record["precision"] = net.rtseg_optimization.precision_reason
        record["conditions"]["dtype"] = f"{net.rtseg_optimization.precision} (float32 input and logits)"
    return record


def bench(models: str | Path | list[str | Path] | None = None, options: BenchOptions = BenchOptions(), *, pattern: str | None = None,
          on_record: Callable[[int, int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Records of ``models`` (one or a list; an empty list is an error), or of every registered model matching
    ``pattern`` when ``models`` is None (``pattern`` None: all of them). Options are checked before any model is built.
    ``on_record(i, n, record)`` is called as each of the ``n`` records is made (progress of a long ``--all``)."""
    given = [models] if isinstance(models, (str, Path)) else list(models or [])
    if options.weights and (models is None or len(given) != 1):
        raise OptionError("--weights names the weights of one model: rtseg bench MODEL --weights TAG (not with --all)")
    if options.precision not in (None, "fp32") and options.optimize is None and options.backend == "torch" and not options.train:
        # --precision auto / bf16 is a choice rtseg.optimize makes: asked for alone, it means the same choice
        from rtseg.tasks.common import Optimization

        options = replace(options, optimize=Optimization(precision=options.precision))
    options.check(given[0] if len(given) == 1 else "")  # before any model is listed or built
    if models is None:
        names: list[str | Path] = list(list_models(pattern))
        if not names:
            raise OptionError(f"no registered model matches {pattern!r}; run `rtseg models` for the full list")
    else:
        names = list(models) if isinstance(models, list) else [models]
    if not names or not all(names):
        raise OptionError("name a model (rtseg bench erfnet) or pass --all")
    records = []
    for name in names:
        records.append(bench_one(name, options))
        if on_record is not None:
            on_record(len(records), len(names), records[-1])
        if (models is None or isinstance(models, list)) and options.optimize is not None:
            # Every model's compiled graph starts from the same forward code: without a reset, the models after
            # the first few would exceed torch.compile's recompilation limit and silently run uncompiled.
            torch._dynamo.reset()
    return records
