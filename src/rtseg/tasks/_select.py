"""Task: ``rtseg select``: the most accurate trained network and deployment path that fits a latency budget, measured on
this machine.

Every trained network for the dataset (the registered weights whose card says they were trained on it and whose file is
here) is built on every deployment path this CPU runs natively (:mod:`rtseg.deploy.paths`), all timed side by side in
interleaved rounds on one input, with the conditions record of ``rtseg bench``. A path's accuracy is the card's mIoU plus
its change against fp32 eager: fp32 paths keep the card's figure; a reduced-precision path counts only when its change was
measured (``--verify DATA_ROOT`` here, else the record shipped with the weights) and is within the goal (bf16 0.002,
INT8 0.005). The pick: the most accurate row within the budget, else the fastest row. Timings are cached per CPU, flags,
thread count, input size, torch, OpenVINO, ONNX Runtime and rtseg version, and weights file, so a second call is instant.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rtseg.cpu import check_threads, cpu_info
from rtseg.data.image_io import check_size
from rtseg.errors import OptionError
from rtseg.tasks.common import Log
from rtseg.tasks.options import check_count, check_number, check_output

__all__ = ["select", "SelectResult", "Row", "Candidate", "candidates", "real_timer"]

TIE = 0.001  # rows whose val mIoU is within this of the best count as equally accurate
GOALS = {"fp32": 0.002, "bf16": 0.002, "int8": 0.005}  # largest allowed |mIoU change| against fp32 eager


@dataclass(frozen=True)
class Candidate:
    """One trained network: registry name, weights tag, its weights file's SHA-256 and the card's val mIoU."""

    model: str
    tag: str
    sha256: str
    miou: float
    dataset: str


@dataclass
class Row:
    """One network on one path: its measured latency and the accuracy that counts for it."""

    model: str
    tag: str
    path: str
    precision: str
    ms: float | None = None
    miou: float | None = None  # card mIoU + the path's change; None when the change is unknown
    miou_change: float | None = None
    accuracy_from: str = ""  # "fp32" | "recorded" | "measured here" | "unverified"
    passes: bool = False
    note: str = ""
    cached: bool = False

    @property
    def key(self) -> str:
        return f"{self.model}@{self.tag}/{self.path}"


@dataclass
class SelectResult:
    rows: list[Row]
    pick: Row | None
    fits: bool
    budget_ms: float
    size: tuple[int, int]
    conditions: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)  # path or network -> why it was not measured
    exported: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        pick = None if self.pick is None else {"model": self.pick.model, "weights": self.pick.tag, "path": self.pick.path,
                                               "ms": self.pick.ms, "miou": self.pick.miou, "fits_budget": self.fits}
        return {"budget_ms": self.budget_ms, "size": list(self.size), "pick": pick, "rows": [asdict(r) for r in self.rows],
                "skipped": self.skipped, "conditions": self.conditions, "exported": self.exported}


# (candidates, paths, size, threads, rounds, calibration) -> {row key: median ms}
Timer = Callable[[list[Candidate], list[str], tuple[int, int], int | None, int, list[Path] | None], dict[str, float]]


def candidates(dataset: str, models: Sequence[str] | None = None) -> tuple[list[Candidate], dict[str, str]]:
    """The trained networks for ``dataset`` whose files are here (shipped or cached), and why others are left out."""
    from rtseg.pretrained import list_pretrained

    found, skipped = [], {}
    for e in list_pretrained():
        card = e.card
        if card.training is None or card.training.dataset != dataset or not card.metrics:
            continue
        if models and e.model not in models:
            continue
        if not e.cached():
            skipped[f"{e.model}@{e.tag}"] = f"not downloaded yet (rtseg eval {e.model} --weights {e.tag} ... fetches it)"
            continue
        if card.classes is None or card.void_outputs:
            skipped[f"{e.model}@{e.tag}"] = "predicts a void class besides the dataset's: its mIoU is not comparable"
            continue
        found.append(Candidate(e.model, e.tag, e.sha256, float(card.metrics[0].miou), dataset))
    if models:
        unknown = sorted(set(models) - {c.model for c in found} - {k.split("@")[0] for k in skipped})
        if unknown:
            raise OptionError(f"--networks: no trained {dataset} weights here for {', '.join(unknown)} (rtseg models --pretrained lists them)")
    return found, skipped


def _recorded(c: Candidate, path: str) -> dict[str, Any] | None:
    from rtseg.pretrained import get_pretrained

    return (get_pretrained(c.model, c.tag).deployment or {}).get(path)


def real_timer(cands: list[Candidate], paths: list[str], size: tuple[int, int], threads: int | None, rounds: int,
               calibration: list[Path] | None) -> dict[str, float]:
    """Build every network on every path and time them all in interleaved rounds (median ms per row)."""
    import numpy as np
    import torch

    from rtseg.card import card_of
    from rtseg.deploy.paths import build_runner
    from rtseg.efficiency import time_calls
    from rtseg.registry import create_model

    calls: dict[str, Callable[[], Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rtseg-select-") as tmp, torch.inference_mode():
        for c in cands:
            model = create_model(c.model, weights=c.tag).eval()
            net_size = card_of(model).network_input_size(size) or size
            x = np.random.default_rng(0).standard_normal((1, 3, *net_size)).astype(np.float32)
            for p in paths:
                run, _ = build_runner(p, model, net_size, threads, Path(tmp), calibration)
                calls[f"{c.model}@{c.tag}/{p}"] = (lambda run=run, x=x: run(x))
        times = time_calls(calls, warmup=2, iters=rounds, rotate=True)
    return {k: statistics.median(v) for k, v in times.items()}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    import torch

    from rtseg import __version__

    out = {"torch": torch.__version__, "rtseg": __version__}
    for pkg in ("openvino", "onnxruntime", "nncf"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _cache_file(size, threads, versions) -> Path:
    from rtseg.data.cache import default_cache_dir

    info = cpu_info()
    key = json.dumps({"cpu": info.model, "flags": sorted(info.flags), "cpus": info.cpus, "threads": threads, "size": list(size),
                      **versions}, sort_keys=True)
    return default_cache_dir() / "select" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def _accuracy(row: Row, c: Candidate, verified: dict[str, float] | None) -> None:
    from rtseg.deploy.paths import PATHS

    precision = PATHS[row.path].precision
    goal = GOALS[precision]
    if verified is not None and row.key in verified:
        row.miou_change, row.accuracy_from = verified[row.key], "measured here"
    elif precision == "fp32":
        row.miou_change, row.accuracy_from = 0.0, "fp32"
    else:
        rec = _recorded(c, row.path)
        if rec is None:
            row.accuracy_from, row.note = "unverified", "no accuracy record for this path: --verify DATA_ROOT measures it"
            return
        row.miou_change, row.accuracy_from = float(rec["miou_change"]), "recorded"
    row.miou = round(c.miou + row.miou_change, 4)
    row.passes = abs(row.miou_change) <= goal
    if not row.passes:
        row.note = f"mIoU change {row.miou_change:+.4f} is beyond the {precision} goal {goal}"


def _verify(cands: list[Candidate], paths: list[str], root: Path, images: int | None, threads: int | None,
            calibration: list[Path] | None, size: tuple[int, int]) -> dict[str, float]:
    """mIoU change of each row against fp32 eager on the dataset's val split (``images`` of them, default all)."""
    import torch
    import torch.nn.functional as F

    from rtseg.card import card_of
    from rtseg.config import DEFAULTS
    from rtseg.data.datasets import build_dataset
    from rtseg.data.transformed import TransformedDataset
    from rtseg.data.transforms import EvalTransform
    from rtseg.deploy.paths import build_runner
    from rtseg.metrics import ConfusionMatrix
    from rtseg.registry import create_model

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rtseg-select-") as tmp, torch.inference_mode():
        for c in cands:
            model = create_model(c.model, weights=c.tag).eval()
            card = card_of(model)
            classes = card.class_info
            data_cfg = {**DEFAULTS["data"], "dataset": c.dataset, "root": str(root), "image_size": list(size), "input_scale": card.input_scale}
            dataset = TransformedDataset(build_dataset(data_cfg, "val"), EvalTransform(data_cfg, card.normalization))
            n = min(images or len(dataset), len(dataset))
            net_size = card.network_input_size(size) or size
            runners = {"fp32": lambda x, m=model: m(torch.from_numpy(x))}
            for p in paths:
                runners[p] = build_runner(p, model, net_size, threads, Path(tmp), calibration)[0]
            cms = {k: ConfusionMatrix(classes.num_classes, classes.ignore_index) for k in runners}
            for i in range(n):
                x, label = dataset[i]
                xn = x[None].numpy()
                for k, run in runners.items():
                    logits = run(xn).float()
                    if tuple(logits.shape[-2:]) != tuple(label.shape[-2:]):
                        logits = F.interpolate(logits, size=tuple(label.shape[-2:]), mode="bilinear", align_corners=False)
                    cms[k].update(logits.argmax(1)[0], label)
            base = cms["fp32"].summary(classes.names)["miou"]
            for p in paths:
                out[f"{c.model}@{c.tag}/{p}"] = round(cms[p].summary(classes.names)["miou"] - base, 5)
    return out


def select(budget_ms: float, *, size: tuple[int, int] | None = None, threads: int | None = None, dataset: str = "camvid",
           networks: Sequence[str] | None = None, paths: Sequence[str] | None = None, verify: str | Path | None = None,
           verify_images: int | None = None, calibration: str | Path | None = None, rounds: int = 10, cache: bool = True,
           export: str | Path | None = None, json_out: str | Path | None = None, timer: Timer | None = None,
           log: Log = Log()) -> SelectResult:
    """The most accurate trained network and deployment path within ``budget_ms`` per image at ``size`` (default: the
    size the weights were evaluated at) on this machine; see the module docstring. ``export`` writes the pick's deployed
    file (OpenVINO IR, ONNX or TorchScript, with its card); ``json_out`` the table and the pick. ``timer`` replaces the
    real measurement (tests)."""
    from rtseg.deploy.paths import PATHS, available_paths

    check_number(budget_ms, "--budget-ms", 0, None, lo_open=True)
    check_threads(threads, "--threads")
    check_count(rounds, "--rounds")
    check_count(verify_images, "--verify-images")
    if size is not None:
        check_size(size, "--size")
    unknown = [p for p in paths or () if p not in PATHS]
    if unknown:
        raise OptionError(f"--paths: unknown path(s) {', '.join(unknown)}; paths: {', '.join(PATHS)}")
    if verify is not None and not Path(verify).is_dir():
        raise OptionError(f"--verify {str(verify)!r} is not a folder (the dataset's root, holding its val split)")
    if export is not None:
        check_output(export, "file", "--export")
    if json_out is not None:
        check_output(json_out, "file", "--json")
    cal_dir = Path(calibration) if calibration else (Path(verify) / "train" if verify and (Path(verify) / "train").is_dir() else None)
    if calibration and not cal_dir.is_dir():
        raise OptionError(f"--calibration {str(calibration)!r} is not a folder of images")
    cal_files = None
    if cal_dir is not None:
        from rtseg.deploy.calibration import calibration_images

        cal_files = calibration_images(cal_dir, 32)
    cands, skipped = candidates(dataset, networks)
    if not cands:
        raise OptionError(f"no trained {dataset} networks are here to choose from" + (f" ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})" if skipped else ""))
    if size is None:
        from rtseg.pretrained import get_pretrained

        known = {get_pretrained(c.model, c.tag).card.input_size for c in cands} - {None}
        if len(known) != 1:
            raise OptionError(f"the networks were evaluated at different sizes ({sorted(known)}): give --size HxW")
        size = known.pop()
    why = available_paths(calibration=cal_files is not None)
    wanted = list(paths) if paths else list(PATHS)
    usable = [p for p in wanted if why[p] is None]
    skipped.update({p: why[p] for p in wanted if why[p] is not None})
    if not usable:
        raise OptionError(f"none of the paths {', '.join(wanted)} runs here: " + "; ".join(f"{p}: {why[p]}" for p in wanted))

    versions = _versions()
    conditions = {"budget_ms": budget_ms, "size": list(size), "threads": threads, "rounds": rounds, "batch": 1,
                  "cpu": cpu_info().describe(), "cpu_kind": cpu_info().kind, **versions,
                  "timing": "median of interleaved rounds (each row once per round, rotating order), one input, 2 warm-up rounds"}
    cache_path = _cache_file(size, threads, versions)
    stored: dict[str, Any] = {}
    if cache and timer is None and cache_path.is_file():
        try:
            stored = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            stored = {}
    rows = [Row(c.model, c.tag, p, PATHS[p].precision) for c in cands for p in usable]
    by_key = {c.model + "@" + c.tag: c for c in cands}
    todo = [r for r in rows if f"{by_key[r.model + '@' + r.tag].sha256}/{r.path}" not in stored]
    if todo:
        todo_c = [c for c in cands if any(r.model == c.model and r.tag == c.tag for r in todo)]
        todo_p = [p for p in usable if any(r.path == p for r in todo)]
        log.info(f"timing {len(todo_c)} network(s) x {len(todo_p)} path(s) at {size[0]}x{size[1]}, {rounds} interleaved rounds ...")
        import torch

        if threads:
            torch.set_num_threads(threads)
        measured = (timer or real_timer)(todo_c, todo_p, size, threads, rounds, cal_files)
        for r in todo:
            stored[f"{by_key[r.model + '@' + r.tag].sha256}/{r.path}"] = measured[r.key]
        if cache and timer is None:
            from rtseg.storage import atomic_write_text

            cache_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cache_path, json.dumps(stored, indent=1, sort_keys=True))
    verified = None
    if verify is not None:
        reduced = [p for p in usable if PATHS[p].reduced]
        if reduced:
            log.info(f"verifying {len(reduced)} reduced-precision path(s) on {dataset} val ({verify_images or 'all'} images) ...")
            verified = _verify(cands, reduced, Path(verify), verify_images, threads, cal_files, size)
    for r in rows:
        r.cached = not any(r is t for t in todo)
        r.ms = round(float(stored[f"{by_key[r.model + '@' + r.tag].sha256}/{r.path}"]), 3)
        _accuracy(r, by_key[r.model + "@" + r.tag], verified)
    ok = [r for r in rows if r.passes]
    fitting = [r for r in ok if r.ms <= budget_ms]
    if fitting:
        # mIoU differences below TIE are measurement noise (a bf16 path's -0.0001): among those rows the fastest wins
        best = max(r.miou for r in fitting)
        pick, fits = min((r for r in fitting if r.miou >= best - TIE), key=lambda r: r.ms), True
    else:
        pick, fits = (min(ok, key=lambda r: r.ms) if ok else None), False
    rows.sort(key=lambda r: (r.ms if r.ms is not None else float("inf")))
    result = SelectResult(rows, pick, fits, budget_ms, tuple(size), conditions, skipped)
    if export is not None and pick is not None:
        result.exported = _export_pick(pick, Path(export), size, cal_dir)
    if json_out is not None:
        from rtseg.storage import atomic_write_text

        atomic_write_text(Path(json_out), json.dumps(result.to_dict(), indent=1))
    return result


def _export_pick(pick: Row, out: Path, size: tuple[int, int], calibration: Path | None) -> dict[str, Any]:
    from rtseg.card import card_of
    from rtseg.deploy.paths import EXPORT_FORMAT
    from rtseg.registry import create_model
    from rtseg.tasks._export import export

    fmt, int8 = EXPORT_FORMAT[pick.path]
    out = out.with_suffix({"openvino": ".xml", "onnx": ".onnx", "torchscript": ".pt"}[fmt])  # the pick decides the format
    card = card_of(create_model(pick.model, weights=pick.tag))
    net_size = card.network_input_size(size) or size
    rec = export(pick.model, out, format=fmt, size=net_size, weights=pick.tag, int8=int8, calibration=calibration if int8 else None)
    note = {"torch-optimized": "TorchScript of the network; rtseg.optimize applies its folding when loaded in Python",
            "torch-bf16": "TorchScript of the fp32 network; run it in bf16 (rtseg.optimize(..., precision='bf16'))",
            "openvino-bf16": "the fp32 IR; compile it with the bf16 inference precision hint (rtseg predict --backend openvino --precision bf16)"}
    return {"out": rec["out"], "format": fmt, "int8": int8, "input_size": rec["input_size"], "note": note.get(pick.path, "")}
