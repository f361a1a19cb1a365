"""Efficiency measurement: parameters, MACs / FLOPs and latency, with every condition recorded."""
from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_flops", "time_calls", "latency_record", "device_sync", "measure_latency", "measure_training_throughput",
           "COUNTED_OPERATIONS"]

# What torch.utils.flop_counter counts: the matrix-multiply and convolution family (forward).
# Element-wise work (BN at inference, activations, additions, pooling, interpolation, softmax) is
# not counted, which is also the convention of the papers' MAC tables.
COUNTED_OPERATIONS = "convolution (incl. transposed, grouped, depthwise), mm, addmm, bmm, baddbmm, matmul, scaled dot-product attention"


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, size: tuple[int, int] = (512, 1024), batch: int = 1) -> dict[str, int]:
    """FLOPs and MACs of one forward pass at ``size`` (H, W); FLOPs = 2 x MACs for the counted operations."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, *size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    model.train(was_training)
    flops = int(counter.get_total_flops())
    return {"flops": flops, "macs": flops // 2}


def device_sync(device: torch.device | str) -> Callable[[], None] | None:
    """What makes a timing wait for ``device``: ``torch.cuda.synchronize`` on a GPU, nothing on the CPU."""
    device = torch.device(device)
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


def time_calls(calls: Mapping[str, Callable[[], Any]], warmup: int = 1, iters: int = 20,
               sync: Callable[[], None] | None = None, rotate: bool = False) -> dict[str, list[float]]:
    """Milliseconds of each of ``iters`` calls of every function in ``calls``: rtseg's one timing loop.

    ``warmup`` untimed rounds come first; the timed calls run in interleaved rounds (each function once per
    round), so that load from other processes hits every candidate alike; ``rotate`` starts each round one
    function later, so that none always runs right after the same other. The lists keep round order. ``sync``
    (see :func:`device_sync`) runs after every call, inside the timing: asynchronous work is counted where it is done.
    """
    def call(fn: Callable[[], Any]) -> None:
        fn()
        if sync is not None:
            sync()

    for _ in range(warmup):
        for fn in calls.values():
            call(fn)
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(max(1, iters)):
        shift = r % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            call(calls[name])
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return times


def latency_record(times_ms: list[float], batch: int = 1) -> dict[str, float]:
    """Mean / median / p90 / min milliseconds of per-call times and the images per second (batch counted)."""
    ordered = sorted(times_ms)
    mean = statistics.fmean(ordered)
    return {
        "latency_ms_mean": mean,
        "latency_ms_median": statistics.median(ordered),
        "latency_ms_p90": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
        "latency_ms_min": ordered[0],
        "fps": 1000.0 * batch / mean,
    }


def measure_latency(
    model: nn.Module,
    size: tuple[int, int] = (512, 1024),
    batch: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = 5,
    iters: int = 20,
    dtype: torch.dtype = torch.float32,
    threads: int | None = None,
) -> dict[str, Any]:
    """Latency of the forward pass in eval mode under ``torch.inference_mode``, synchronised on CUDA.

    Returns mean / median / p90 in milliseconds, FPS (images per second, batch counted) and the conditions.
    """
    device = torch.device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    model = model.to(device=device).eval()
    if dtype != torch.float32:  # fp32 measures the model as it is (a bf16-optimized model keeps its bf16 weights)
        model = model.to(dtype=dtype)
    x = torch.randn(batch, 3, *size, device=device, dtype=dtype)
    with torch.inference_mode():
        times = time_calls({"model": lambda: model(x)}, warmup, iters, device_sync(device))["model"]
    return {**latency_record(times, batch), "conditions": conditions(device, size, batch, warmup, iters, dtype)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from rtseg.cpu import cpu_info

    return cpu_info().model


def conditions(device: torch.device, size, batch: int, warmup: int, iters: int, dtype: torch.dtype) -> dict[str, Any]:
    return {
        "torch_version": torch.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "size": list(size),
        "batch": batch,
        "warmup": warmup,
        "iters": iters,
        "dtype": str(dtype).replace("torch.", ""),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mode": "eval + torch.inference_mode",
        **cpu_record(device),
    }


def cpu_record(device: torch.device | str = "cpu") -> dict[str, Any]:
    """The CPU's kind and the flags that decide precision and deployment, for a record measured on (or fed by) it."""
    from rtseg.cpu import cpu_info

    info = cpu_info()
    return {"cpu": info.model, "cpu_kind": info.kind, "cpu_flags": info.named_flags, "cpu_count": info.cpus}


def measure_training_throughput(
    model: nn.Module,
    num_classes: int,
    size: tuple[int, int] = (360, 480),
    batch: int = 8,
    precision: str = "auto",
    device: str | torch.device = "cpu",
    warmup: int = 2,
    iters: int = 5,
    threads: int | None = None,
    compile: str = "off",
) -> dict[str, Any]:
    """Training steps per second as the trainer runs them (``rtseg.engine.precision``: forward under the
    precision's autocast and memory layout, fp32 cross-entropy, backward, an Adam step) on random images and
    labels; ``compile`` is the trainer's ``train.compile`` for a long run (compiled during the warm-up).

    Returns images per second, the median step time and the conditions, with the precision resolved.
    """
    from rtseg.engine.compiled_step import MIN_ITERATIONS, compile_for_training, resolve_train_compile
    from rtseg.engine.precision import forward_loss, optimizer_step, prepare_model, resolve_precision

    device = torch.device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    mode = resolve_precision(precision, device)
    compiled = resolve_train_compile(compile, device, MIN_ITERATIONS)
    if compiled.enabled and warmup < 1:
        raise ValueError("timing a compiled training step needs at least one warm-up step (--warmup 1), which compiles it")
    model = prepare_model(model.to(device).train(), mode)
    run = compile_for_training(model) if compiled.enabled else model
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *size, generator=generator).to(device)
    labels = torch.randint(0, num_classes, (batch, *size), generator=generator).to(device)
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=mode.grad_scaling)
    step = lambda: optimizer_step(forward_loss(run, criterion, mode, images, labels), optimizer, scaler)  # noqa: E731
    times = [ms / 1000.0 for ms in time_calls({"step": step}, warmup, iters, device_sync(device))["step"]]
    step_s = statistics.median(times)
    record = conditions(device, size, batch, warmup, iters, torch.float32)
    record.update(dtype=mode.name, precision=mode.describe(), compile=compiled.describe(), mode="train: forward + fp32 loss + backward + Adam step")
    return {"images_per_s": batch / step_s, "step_ms_median": step_s * 1000.0, "step_ms_min": min(times) * 1000.0, "conditions": record}
