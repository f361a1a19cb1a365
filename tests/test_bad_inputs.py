"""Bad inputs, as a hostile user would try them (issue 14): every one ends in a non-zero exit and a message that
names the offending key, file or option, never in a traceback, and leaves every earlier result as it was.

Each case builds its command line from a small context (a tiny trained run, a scratch folder) and is run in-process
through ``rtseg.cli.main``. Cases fail before any work, or on tiny synthetic data, so the module stays fast.
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from rtseg.cli import main
from test_trainer import TINY

CPU_ONLY = not torch.cuda.is_available()


@dataclass
class Ctx:
    """What a case builds on: a finished one-epoch run (``run``, its ``ckpt``), a scratch folder and an image."""

    run: Path
    ckpt: Path
    tmp: Path
    image: Path
    monkeypatch: pytest.MonkeyPatch
    held: list


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad-inputs-run")
    assert main(["train", "demo", *TINY, "train.epochs=1", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def ctx(trained, tmp_path, monkeypatch):
    image = tmp_path / "img.png"
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(image)
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    c = Ctx(trained, trained / "last.pt", tmp_path, image, monkeypatch, [])
    yield c
    for lock in c.held:
        lock.release()


def _file(path: Path, content: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _train(c: Ctx, *overrides: str, out: Path | None = None) -> list[str]:
    return ["train", "demo", *TINY, "train.epochs=1", *overrides, "--out", str(out or c.tmp / "new-run"), "--quiet"]


def _predict(c: Ctx, *options: str, inputs: list[Path] | None = None) -> list[str]:
    return ["predict", str(c.ckpt), *map(str, inputs or [c.image]), "--out", str(c.tmp / "pred"), *options]


def _export(c: Ctx, *options: str) -> list[str]:
    return ["export", str(c.ckpt), "--size", "32x32", "--no-verify", *options]


def _eval(c: Ctx, *options: str) -> list[str]:
    return ["eval", str(c.ckpt), "--quiet", *options]


def _bench(*options: str) -> list[str]:
    return ["bench", "espnet-c", "--size", "32x32", "--warmup", "0", "--iters", "1", *options]


def _held_lock(c: Ctx) -> list[str]:
    from rtseg.engine.run_dir import prepare_run_dir

    folder = c.tmp / "busy"
    lock = prepare_run_dir(folder)  # another run holds the folder (this process: its PID is named)
    c.held.append(lock)
    return _train(c, out=folder)


def _no_network(c: Ctx, model: str) -> list[str]:
    import torch.hub

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    c.monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return _train(c, f"model.name={model}", "model.options={pretrained: imagenet}")


def _disk_full(c: Ctx) -> list[str]:
    """A copy of the finished run, continued for one more epoch on a disk that is full when last.pt is replaced."""
    copy = c.tmp / "full-disk-run"
    shutil.copytree(c.run, copy)
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("last.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    c.monkeypatch.setattr(os, "replace", replace)
    return ["train", "demo", *TINY, "train.epochs=2", "--out", str(copy), "--resume", "--quiet"]


def _config_file(c: Ctx, text: str) -> list[str]:
    return ["train", str(_file(c.tmp / "cfg.yaml", text)), "--out", str(c.tmp / "r"), "--quiet"]


def _malicious_pickle(c: Ctx) -> Path:
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = c.tmp / "evil.pt"
    torch.save({"model_state": Boom()}, path)
    return path


def _unwritable() -> Path:
    """A folder no one may create files in (root included): /sys on Linux."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys/rtseg-bad-inputs")
    os.close(fd)
    os.unlink(probe)
    pytest.skip("needs a read-only location (/sys on Linux)")


# (case id, command line builder, text the message must contain)
Case = tuple[str, Callable[[Ctx], list[str]], str]
CASES: list[Case] = [
    # -- config values: every key typed and ranged, named in the message
    ("cfg-batch-zero", lambda c: _train(c, "train.batch_size=0"), "train.batch_size"),
    ("cfg-batch-fraction", lambda c: _train(c, "train.batch_size=2.5"), "train.batch_size"),
    ("cfg-epochs-zero", lambda c: _train(c, "train.epochs=0"), "train.epochs"),
    ("cfg-epochs-negative", lambda c: _train(c, "train.epochs=-1"), "train.epochs"),
    ("cfg-epochs-text", lambda c: _train(c, "train.epochs=abc"), "train.epochs"),
    ("cfg-lr-nan", lambda c: _train(c, "optimizer.lr=nan"), "optimizer.lr"),
    ("cfg-lr-negative", lambda c: _train(c, "optimizer.lr=-0.1"), "optimizer.lr"),
    ("cfg-image-size-zero", lambda c: _train(c, "data.image_size=[0,0]"), "data.image_size"),
    ("cfg-image-size-scalar", lambda c: _train(c, "data.image_size=64"), "data.image_size"),
    ("cfg-image-size-huge", lambda c: _train(c, "data.image_size=[100000,100000]"), "data.image_size"),
    ("cfg-scale-range-zero", lambda c: _train(c, "data.scale_range=[0,0]"), "data.scale_range"),
    ("cfg-crop-sizes-zero", lambda c: _train(c, "data.crop_sizes=[[0,64]]"), "data.crop_sizes"),
    ("cfg-hflip-maybe", lambda c: _train(c, "data.hflip=maybe"), "data.hflip"),
    ("cfg-unknown-key", lambda c: _train(c, "train.epochz=1"), "train.epochz"),
    ("cfg-unknown-model", lambda c: _train(c, "model.name=espnett"), "espnett"),
    ("cfg-unknown-optimizer", lambda c: _train(c, "optimizer.name=sgdd"), "optimizer.name"),
    ("cfg-train-section-number", lambda c: _config_file(c, "model: {name: espnet-c}\ntrain: 5\n"), "train"),
    ("cfg-not-yaml", lambda c: _config_file(c, "model: [unclosed\n"), "cfg.yaml"),
    ("cfg-missing-file", lambda c: ["train", str(c.tmp / "nope.yaml"), "--out", str(c.tmp / "r")], "nope.yaml"),
    # -- run folders: never overwritten, mixed or degraded
    ("run-exists-no-resume", lambda c: _train(c, out=c.run), "--resume"),
    ("run-resume-and-overwrite", lambda c: _train(c, "--resume", "--overwrite", out=c.run), "--overwrite"),
    ("run-resume-nothing", lambda c: _train(c, "--resume", out=_folder(c.tmp / "empty")), "empty"),
    ("run-out-is-file", lambda c: _train(c, out=_file(c.tmp / "afile")), "afile"),
    ("run-out-under-file", lambda c: _train(c, out=_file(c.tmp / "afile") / "run"), "afile"),
    ("run-in-use", _held_lock, f"PID {os.getpid()}"),
    ("run-resume-missing-checkpoint", lambda c: _train(c, f"--resume={c.tmp / 'gone.pt'}", out=c.tmp / "r2"), "gone.pt"),
    ("run-out-unwritable", lambda c: _train(c, out=_unwritable() / "run"), "rtseg-bad-inputs"),
    # -- inputs read: missing, corrupt, unsupported files are named
    ("in-missing-image", lambda c: _predict(c, inputs=[c.tmp / "ghost.png"]), "ghost.png"),
    ("in-corrupt-image", lambda c: _predict(c, inputs=[_file(c.tmp / "bad.png", b"not a png")]), "bad.png"),
    ("in-truncated-png", lambda c: _predict(c, inputs=[_file(c.tmp / "cut.png", c.image.read_bytes()[:60])]), "cut.png"),
    ("in-empty-folder", lambda c: _predict(c, inputs=[_folder(c.tmp / "no-images")]), "no-images"),
    ("in-nan-tiff", lambda c: _predict(c, inputs=[_nan_tiff(c)]), "nan.tif"),
    ("in-missing-checkpoint", lambda c: ["predict", str(c.tmp / "gone.pt"), str(c.image), "--out", str(c.tmp / "p")], "gone.pt"),
    ("in-checkpoint-not-torch", lambda c: _eval(c)[:1] + [str(_file(c.tmp / "junk.pt", b"junk"))] + _eval(c)[2:], "junk.pt"),
    ("in-malicious-pickle", lambda c: ["eval", str(_malicious_pickle(c)), "--quiet"], "never unpickles"),
    ("in-class-map-missing", lambda c: _eval(c, "--class-map", str(c.tmp / "map.yaml")), "map.yaml"),
    # -- resource limits: sizes beyond a sane bound are refused before any allocation
    ("size-predict-huge", lambda c: _predict(c, "--size", "100000x100000"), "--size"),
    ("size-bench-huge", lambda c: _bench("--size", "100000x100000"), "--size"),
    ("size-bench-one-number", lambda c: _bench("--size", "512"), "--size"),
    ("size-export-zero", lambda c: ["export", str(c.ckpt), "--size", "0x10"], "--size"),
    ("size-export-trace-huge", lambda c: ["export", str(c.ckpt), "--dynamic", "--trace-size", "99999x99999"], "--trace-size"),
    ("size-eval-window-huge", lambda c: _eval(c, "--window", "100000x100000"), "--window"),
    ("size-eval-stride-text", lambda c: _eval(c, "--window", "32x32", "--stride", "abc"), "--stride"),
    ("size-eval-size-negative", lambda c: _eval(c, "--size=-5x10"), "--size"),
    # -- options of bench
    ("bench-threads-zero", lambda c: _bench("--threads", "0"), "--threads"),
    ("bench-threads-negative", lambda c: _bench("--threads", "-1"), "--threads"),
    ("bench-iters-zero", lambda c: _bench("--iters", "0"), "--iters"),
    ("bench-warmup-negative", lambda c: _bench("--warmup", "-1"), "--warmup"),
    ("bench-batch-zero", lambda c: _bench("--batch", "0"), "--batch"),
    ("bench-device-tpu", lambda c: _bench("--device", "tpu"), "--device"),
    pytest.param("bench-device-cuda", lambda c: _bench("--device", "cuda"), "--device",
                 marks=pytest.mark.skipif(not CPU_ONLY, reason="CUDA is available here")),
    ("bench-filter-nothing", lambda c: ["bench", "--all", "--filter", "zzz*"], "zzz*"),
    ("bench-num-classes-zero", lambda c: _bench("--num-classes", "0"), "--num-classes"),
    ("bench-unknown-model", lambda c: ["bench", "espnett"], "espnett"),
    # -- options of predict
    ("predict-alpha-above-one", lambda c: _predict(c, "--alpha", "5"), "--alpha"),
    ("predict-alpha-negative", lambda c: _predict(c, "--alpha", "-0.1"), "--alpha"),
    ("predict-threads-zero", lambda c: _predict(c, "--threads", "0"), "--threads"),
    ("predict-fps-negative", lambda c: _predict(c, "--as-video", "--fps", "-5"), "--fps"),
    ("predict-fps-zero", lambda c: _predict(c, "--as-video", "--fps", "0"), "--fps"),
    ("predict-precision-plain", lambda c: _predict(c, "--precision", "bf16"), "--precision"),
    # -- options of export
    ("export-opset-99", lambda c: _export(c, "--opset", "99", "--out", str(c.tmp / "m.onnx")), "--opset"),
    ("export-opset-9", lambda c: _export(c, "--opset", "9", "--out", str(c.tmp / "m.onnx")), "--opset"),
    ("export-torchscript-as-onnx", lambda c: _export(c, "--format", "torchscript", "--out", str(c.tmp / "y.onnx")), "y.onnx"),
    ("export-onnx-as-pt", lambda c: _export(c, "--format", "onnx", "--out", str(c.tmp / "y.pt")), "y.pt"),
    ("export-openvino-as-onnx", lambda c: _export(c, "--format", "openvino", "--out", str(c.tmp / "y.onnx")), "y.onnx"),
    ("export-calibration-count-zero", lambda c: _export(c, "--int8", "--calibration", str(_folder(c.tmp / "cal")), "--calibration-count", "0",
                                                         "--out", str(c.tmp / "q.onnx")), "--calibration-count"),
    ("export-int8-no-calibration", lambda c: _export(c, "--int8", "--out", str(c.tmp / "q.onnx")), "--calibration"),
    ("export-calibration-missing", lambda c: _export(c, "--int8", "--calibration", str(c.tmp / "nocal"), "--out", str(c.tmp / "q.onnx")), "nocal"),
    ("export-dynamic-torchscript", lambda c: ["export", str(c.ckpt), "--dynamic", "--format", "torchscript", "--out", str(c.tmp / "t.pt")], "--dynamic"),
    # -- options of eval
    ("eval-scales-negative", lambda c: _eval(c, "--scales", "-1"), "--scales"),
    ("eval-scales-zero", lambda c: _eval(c, "--scales", "1,0"), "--scales"),
    ("eval-scales-text", lambda c: _eval(c, "--scales", "big"), "--scales"),
    ("eval-device-tpu", lambda c: _eval(c, "--device", "tpu"), "--device"),
    ("eval-workers-negative", lambda c: _eval(c, "--workers", "-1"), "--workers"),
    ("eval-samples-zero", lambda c: _eval(c, "--samples", "0"), "--samples"),
    ("eval-unknown-dataset", lambda c: _eval(c, "--data", "imagenet-seg"), "--data 'imagenet-seg'"),
    # -- outputs: checked before the work
    ("out-eval-json-is-folder", lambda c: _eval(c, "--json", str(_folder(c.tmp / "m.json"))), "m.json"),
    ("out-eval-json-under-file", lambda c: _eval(c, "--json", str(_file(c.tmp / "plain") / "m.json")), "plain"),
    ("out-eval-json-unwritable", lambda c: _eval(c, "--json", str(_unwritable() / "m.json")), "--json"),
    ("out-predict-out-is-file", lambda c: ["predict", str(c.ckpt), str(c.image), "--out", str(_file(c.tmp / "occupied"))], "occupied"),
    ("out-predict-out-unwritable", lambda c: ["predict", str(c.ckpt), str(c.image), "--out", str(_unwritable() / "p")], "--out"),
    ("out-export-out-is-folder", lambda c: _export(c, "--out", str(_folder(c.tmp / "m2.onnx"))), "m2.onnx"),
    ("out-export-out-under-file", lambda c: _export(c, "--out", str(_file(c.tmp / "plain") / "m.onnx")), "plain"),
    ("out-bench-json-under-file", lambda c: _bench("--json", str(_file(c.tmp / "plain") / "b.json")), "plain"),
    ("out-export-weights-under-file", lambda c: ["export-weights", str(c.ckpt), "--out", str(_file(c.tmp / "plain") / "w.safetensors")], "plain"),
    # -- no network: the file, where to put it and how to do without it
    ("net-farseenet-imagenet", lambda c: _no_network(c, "farseenet"), "pretrained=null"),
    ("net-liteseg-imagenet", lambda c: _no_network(c, "liteseg-mobilenetv2"), "pretrained=null"),
    ("net-weights-url", lambda c: _offline_weights_url(c), "cannot download"),
    # -- disk full during a checkpoint write
    ("disk-full-checkpoint", _disk_full, "disk full"),
    # -- issue 30: a weights file is untrusted input (its card is checked like a config)
    ("card-std-zero", lambda c: _predict_with_card(c, lambda d: d["normalization"].update(std=[0, 0, 0])), "std must be 3 numbers > 0"),
    ("card-std-nan", lambda c: _predict_with_card(c, lambda d: d["normalization"].update(std=[float("nan")] * 3)), "std"),
    ("card-huge-option", lambda c: _predict_with_card(c, lambda d: d["options"].update(q=1_000_000_000)), "q must be an integer 1..64"),
    ("card-option-wrong-type", lambda c: _predict_with_card(c, lambda d: d["options"].update(q="eight")), "q must be"),
    ("card-duplicate-classes", lambda c: _predict_with_card(c, _duplicate_class), "unique"),
    ("card-palette-short", lambda c: _predict_with_card(c, lambda d: d["classes"]["palette"].pop()), "palette"),
    ("card-outputs-huge", lambda c: _predict_with_card(c, lambda d: d.update(num_outputs=10**9)), "num_outputs"),
    ("ir-without-bin", lambda c: ["predict", str(_file(c.tmp / "lonely.xml", "<net/>")), str(c.image), "--out", str(c.tmp / "p")], "lonely.bin"),
    ("weights-text-file", lambda c: _predict(c, "--weights", str(_file(c.tmp / "passwd", "root:x:0:0::/root:/bin/sh\n")))[:1] + ["espnet-c"]
     + _predict(c, "--weights", str(c.tmp / "passwd"))[2:], "not a weights file (a text file)"),
    ("weights-device-file", lambda c: ["predict", "espnet-c", str(c.image), "--out", str(c.tmp / "p"), "--weights", "/dev/zero"], "not a regular file"),
    ("bench-exported-file", lambda c: ["bench", str(_file(c.tmp / "m.onnx", b"x"))], "exported network"),
    # -- configs and YAML are bounded
    ("yaml-alias-bomb", lambda c: _config_file(c, _ALIAS_BOMB), "alias"),
    ("yaml-dataset-alias-bomb", lambda c: _train(c, "data.dataset=folder", f"data.root={_folder_dataset(c, _ALIAS_BOMB_DATASET)}",
                                                 "model.num_classes=null"), "alias"),
    ("option-dilations-nested", lambda c: _train(c, "model.name=fplnet", "model.options={dilations: [[1], 2, 3, 4]}"), "dilations"),
    ("option-dilations-zero", lambda c: _train(c, "model.name=fplnet", "model.options={dilations: [0, 0, 0, 0]}"), "dilations"),
    ("class-map-bad-yaml", lambda c: _eval(c, "--class-map", str(_file(c.tmp / "map.yaml", "road: [unclosed\n"))), "not valid YAML"),
    ("dataset-duplicate-classes", lambda c: _train(c, "data.dataset=folder", "model.num_classes=null",
                                                   f"data.root={_folder_dataset(c, 'classes: [road, car, Road]')}"), "unique"),
    ("dataset-ignore-is-a-class", lambda c: _train(c, "data.dataset=folder", "model.num_classes=null",
                                                   f"data.root={_folder_dataset(c, 'classes: [road, car, sky]' + chr(10) + 'ignore_index: 1')}"),
     "ignore_index 1 is the label value of class 'car'"),
    # -- resource bounds
    ("threads-bench-huge", lambda c: _bench("--threads", "100000"), "logical CPU"),
    ("threads-predict-huge", lambda c: _predict(c, "--threads", "100000"), "logical CPU"),
    ("threads-train-huge", lambda c: _train(c, "train.threads=4000"), "train.threads"),
    ("video-one-pixel-frames", lambda c: _predict(c, "--as-video", inputs=[_tiny_frames(c)]), "at least 2x2"),
    # -- the POOR list: one line naming the real cause
    ("leading-dash-file", lambda c: ["predict", str(c.ckpt), "--out", str(c.tmp / "p"), _dash_file(c)], "put -- before"),
    ("fifo-as-image", lambda c: _predict(c, inputs=[_fifo(c)]), "not a regular file"),
    ("out-in-proc", lambda c: _predict(c)[:3] + ["--out", "/proc/rtseg-x"], "system file system"),
    ("out-empty", lambda c: ["predict", str(c.ckpt), str(c.image), "--out", ""], "--out is empty"),
    ("cache-env-is-file", lambda c: _cache_on_file(c), "$RTSEG_CACHE"),
    ("resume-truncated-last", lambda c: _truncated_resume(c), "best.pt"),
]

_ALIAS_BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                                                                  for p, n in zip("abcdefgh", "bcdefghi")]) + "\nmodel: {name: espnet-c}\n"
_ALIAS_BOMB_DATASET = "classes: [road, car]\n" + "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]" for p, n in zip("abcdefgh", "bcdefghi")])


def _predict_with_card(c: Ctx, change: Callable[[dict], object]) -> list[str]:
    """predict with a copy of the run's weights whose card JSON was edited by ``change`` (anyone can write a card)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from rtseg import export_weights

    clean = c.tmp / "clean.safetensors"
    export_weights(c.ckpt, clean)
    with safe_open(str(clean), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    card = json.loads(meta["rtseg.card"])
    change(card)
    edited = c.tmp / "edited.safetensors"
    save_file(tensors, str(edited), {**meta, "rtseg.card": json.dumps(card)})
    return ["predict", str(edited), str(c.image), "--out", str(c.tmp / "p")]


def _duplicate_class(card: dict) -> None:
    card["classes"]["names"][1] = card["classes"]["names"][0].upper()


def _folder_dataset(c: Ctx, spec: str) -> Path:
    root = c.tmp / "folder-ds"
    for split in ("train", "val"):
        for i in range(2):
            _folder(root / "images" / split)
            _folder(root / "labels" / split)
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(root / "images" / split / f"{i}.png")
            Image.fromarray(np.full((16, 16), i, np.uint8)).save(root / "labels" / split / f"{i}.png")
    _file(root / "dataset.yaml", spec + "\n")
    return root


def _tiny_frames(c: Ctx) -> Path:
    folder = _folder(c.tmp / "tiny-frames")
    for i in range(2):
        Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / f"{i}.png")
    return folder


def _dash_file(c: Ctx) -> str:
    shutil.copy(c.image, c.tmp / "-dash.png")
    c.monkeypatch.chdir(c.tmp)
    return "-dash.png"


def _fifo(c: Ctx) -> Path:
    path = c.tmp / "pipe.png"
    os.mkfifo(path)
    return path


def _cache_on_file(c: Ctx) -> list[str]:
    c.monkeypatch.setenv("RTSEG_CACHE", str(_file(c.tmp / "not-a-folder")))
    return ["predict", "espnet-c", str(c.image), "--out", str(c.tmp / "p"), "--weights", "https://example.invalid/w.pth"]


def _truncated_resume(c: Ctx) -> list[str]:
    copy = c.tmp / "truncated-run"
    shutil.copytree(c.run, copy)
    last = copy / "last.pt"
    last.write_bytes(last.read_bytes()[:5000])
    return ["train", "demo", *TINY, "train.epochs=2", "--out", str(copy), "--resume", "--quiet"]


def _nan_tiff(c: Ctx) -> Path:
    path = c.tmp / "nan.tif"
    Image.fromarray(np.full((16, 16), np.nan, np.float32), mode="F").save(path)
    return path


def _offline_weights_url(c: Ctx) -> list[str]:
    import torch.hub

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    c.monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return ["predict", "espnet-c", str(c.image), "--out", str(c.tmp / "p"), "--weights", "https://example.invalid/espnet-c.pt"]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _case_id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize("name,build,expected", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_a_clear_error_and_changes_nothing(name, build, expected, ctx, capsys):
    before = _snapshot(ctx.run)
    argv = build(ctx)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    text = out + err
    assert code != 0, f"{name}: exit 0\n{text}"
    assert "Traceback" not in text and "internal error" not in text, text
    assert expected in text, f"{name}: {expected!r} not named in\n{text}"
    assert _snapshot(ctx.run) == before, f"{name}: the earlier run was changed"


def test_there_are_at_least_90_distinct_cases():
    names = [_case_id(c) for c in CASES]
    assert len(set(names)) == len(names) >= 90


def test_disk_full_keeps_the_previous_checkpoint(ctx, capsys):
    argv = _disk_full(ctx)
    before = (ctx.tmp / "full-disk-run" / "last.pt").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "disk full" in err and "nothing was lost" in err
    folder = ctx.tmp / "full-disk-run"
    assert (folder / "last.pt").read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")], "a temporary file was left behind"


def test_resume_of_a_finished_run_returns_its_summary_and_writes_nothing(ctx, capsys):
    before = _snapshot(ctx.run)
    assert main(["train", "demo", *TINY, "train.epochs=1", "--out", str(ctx.run), "--resume", "--quiet"]) == 0
    assert _snapshot(ctx.run) == before
    assert "best validation mIoU" in capsys.readouterr().out


def test_overwrite_moves_the_old_run_aside(ctx):
    folder = ctx.tmp / "again"
    shutil.copytree(ctx.run, folder)
    old = (folder / "last.pt").read_bytes()
    assert main(["train", "demo", *TINY, "train.epochs=1", "--out", str(folder), "--overwrite", "--quiet"]) == 0
    replaced = [p for p in folder.iterdir() if p.name.startswith(".replaced-")]
    assert len(replaced) == 1 and (replaced[0] / "last.pt").read_bytes() == old
    assert (folder / "last.pt").is_file()


def test_a_stray_temporary_is_removed_on_resume(ctx):
    folder = ctx.tmp / "interrupted"
    shutil.copytree(ctx.run, folder)
    stray = _file(folder / ".last.pt.abc123.tmp", b"half a checkpoint")
    assert main(["train", "demo", *TINY, "train.epochs=1", "--out", str(folder), "--resume", "--quiet"]) == 0
    assert not stray.exists()


def test_an_internal_error_prints_a_traceback_and_the_report_line(monkeypatch, capsys):
    import rtseg.tasks

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a defect")

    monkeypatch.setattr(rtseg.tasks, "bench", broken)
    assert main(["bench", "espnet-c"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "please report it" in err
