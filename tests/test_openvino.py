"""OpenVINO backend: IR export (via ONNX and via PyTorch) with metadata, fp32 / bf16 / auto precision, NNCF INT8, CLI."""
import numpy as np
import pytest
import torch

import rtseg

pytest.importorskip("openvino")

from rtseg.deploy import precision as precision_mod  # noqa: E402
from rtseg.deploy.onnx_export import ExportError  # noqa: E402
from rtseg.deploy.openvino_backend import (OpenVINOSegmenter, compile_ir, export_openvino, read_ir_metadata,  # noqa: E402
                                           verify_ir)
from test_optimize import randomise_batchnorm  # noqa: E402


def _image(tmp_path, name="img.png", shape=(40, 56, 3), seed=0):
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("name,via", [("espnet-c", "onnx"), ("espnet-c", "torch"), ("fplnet", "onnx")])
def test_ir_matches_pytorch_and_carries_metadata(name, via, tmp_path):
    model = randomise_batchnorm(rtseg.create_model(name, num_classes=11))
    record = export_openvino(model, tmp_path / "m.xml", (64, 96), via=via)
    assert record["verification"]["max_abs_diff"] < 1e-4
    assert (tmp_path / "m.bin").is_file()
    meta = read_ir_metadata(tmp_path / "m.xml")
    card = meta["card"]
    assert meta["input_size"] == "64x96" and card.model == name and card.num_outputs == 11
    assert len(meta["classes"]) == 11 and card.normalization.name == rtseg.get_entry(name).normalization == meta["normalization"]["name"]
    assert {"onnx": "ONNX", "torch": "PyTorch"}[via] in meta["format"]


@pytest.mark.parametrize("via", ["onnx", "torch"])
def test_dynamic_ir_runs_at_another_size(via, tmp_path):
    model = randomise_batchnorm(rtseg.create_model("espnet-c", num_classes=19))
    record = export_openvino(model, tmp_path / "m.xml", (64, 96), dynamic=True, via=via)
    assert record["verification"]["size"] == [72, 88]  # verified at a size other than the traced one
    assert read_ir_metadata(tmp_path / "m.xml")["input_size"] == "dynamic"


def test_verification_catches_a_different_model(tmp_path):
    export_openvino(rtseg.create_model("espnet-c", num_classes=19), tmp_path / "m.xml", (32, 64), verify=False)
    other = randomise_batchnorm(rtseg.create_model("espnet-c", num_classes=19))
    with pytest.raises(ExportError, match="differ"):
        verify_ir(other, tmp_path / "m.xml", (32, 64))


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(ExportError, match="NAME.xml"):
        export_openvino(rtseg.create_model("espnet-c", num_classes=19), tmp_path / "m.onnx", (32, 64))
    with pytest.raises(ExportError, match="no such OpenVINO IR"):
        read_ir_metadata(tmp_path / "missing.xml")


def test_bf16_hint_keeps_the_arg_max(tmp_path):
    model = randomise_batchnorm(rtseg.create_model("espnet-c", num_classes=19))
    export_openvino(model, tmp_path / "m.xml", (64, 96), verify=False)
    fp32, c32 = compile_ir(tmp_path / "m.xml", "fp32", threads=1)
    bf16, c16 = compile_ir(tmp_path / "m.xml", "bf16", threads=1)
    assert (c32.precision, c16.precision) == ("fp32", "bf16")
    if precision_mod.native_bf16()[0]:
        assert str(bf16.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'bfloat16'>"
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    a, b = torch.from_numpy(fp32(x)[0]), torch.from_numpy(bf16(x)[0])
    assert float((a.argmax(1) == b.argmax(1)).float().mean()) > 0.95
    with pytest.raises(ValueError, match="precision must be one of"):
        compile_ir(tmp_path / "m.xml", "fp16")


def test_auto_precision_needs_native_bf16_and_a_passed_check(tmp_path, monkeypatch):
    export_openvino(rtseg.create_model("espnet-c", num_classes=19), tmp_path / "m.xml", (32, 64), verify=False)
    monkeypatch.setattr(precision_mod, "native_bf16", lambda: (False, "no bf16 flags (test)"))
    _, choice = compile_ir(tmp_path / "m.xml", "auto", threads=1)
    assert choice.precision == "fp32" and "no bf16 flags" in choice.reason
    monkeypatch.setattr(precision_mod, "native_bf16", lambda: (True, "flags (test)"))
    _, choice = compile_ir(tmp_path / "m.xml", "auto", threads=1, min_agreement=1.01)  # an unreachable bar
    assert choice.precision == "fp32" and "failed" in choice.reason and choice.argmax_agreement is not None
    _, choice = compile_ir(tmp_path / "m.xml", "auto", threads=1, min_agreement=0.5)
    assert choice.precision == "bf16" and "passed" in choice.reason


def test_export_cli_predict_and_bench(tmp_path, capsys):
    from PIL import Image

    from rtseg.cli import main

    xml = tmp_path / "m.xml"
    assert main(["export", "espnet-c", "--format", "openvino", "--dynamic", "--trace-size", "64x64", "--out", str(xml)]) == 0
    assert "verified: OpenVINO (fp32) vs PyTorch" in capsys.readouterr().out
    img = _image(tmp_path)
    assert main(["predict", str(xml), str(img), "--out", str(tmp_path / "pred"), "--save-labels", "--threads", "1", "--precision", "auto"]) == 0
    labels = np.asarray(Image.open(tmp_path / "pred" / "img_labels.png"))
    assert labels.shape == (40, 56) and labels.max() < 19
    # a model name with --backend openvino is exported on the fly; an arg-max IR outputs labels
    assert main(["predict", "espnet-c", str(img), "--backend", "openvino", "--size", "32x48", "--out", str(tmp_path / "p2")]) == 0
    assert main(["export", "espnet-c", "--format", "openvino", "--argmax", "--size", "32x48", "--out", str(tmp_path / "a.xml")]) == 0
    assert OpenVINOSegmenter(tmp_path / "a.xml").predict(np.zeros((20, 30, 3), np.uint8)).shape == (20, 30)
    capsys.readouterr()
    assert main(["bench", "espnet-c", "--backend", "openvino", "--size", "32x64", "--iters", "2", "--warmup", "1", "--threads", "1",
                 "--precision", "auto"]) == 0
    out = capsys.readouterr().out
    assert "openvino" in out and "precision      " in out
    assert main(["bench", "espnet-c", "--backend", "openvino", "--device", "cuda", "--size", "32x64"]) == 2
    capsys.readouterr()
    # --precision alone on PyTorch means rtseg.optimize's choice (issue 29): it implies --optimize
    assert main(["bench", "espnet-c", "--precision", "auto", "--compile", "off", "--size", "32x64", "--iters", "1", "--warmup", "0"]) == 0
    assert "optimized" in capsys.readouterr().out


def test_nncf_int8_export_keeps_metadata(tmp_path, capsys):
    pytest.importorskip("nncf")
    from rtseg.cli import main

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        _image(calib, f"{i}.png", (48, 64, 3), seed=i)
    out = tmp_path / "q.xml"
    assert main(["export", "espnet-c", "--format", "openvino", "--size", "48x64", "--int8", "--calibration", str(calib),
                 "--out", str(out)]) == 0
    assert "calibrated on 3 images" in capsys.readouterr().out
    assert "FakeQuantize" in out.read_text()
    meta = read_ir_metadata(out)
    assert meta["quantization"].startswith("int8 NNCF") and meta["input_size"] == "48x64"
    labels = OpenVINOSegmenter(out).predict(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assert labels.shape == (48, 64) and labels.max() < 19
    assert main(["export", "espnet-c", "--format", "openvino", "--size", "48x64", "--int8", "--out", str(out)]) == 2


def test_precision_benchmark_script_on_camvid_images(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import shared_path

    camvid = shared_path("data", "camvid")
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "p.json"
    cmd = [sys.executable, str(root / "benchmarks" / "precision_camvid.py"), "--model", "espnet-c", "--num-classes", "11",
           "--root", str(camvid), "--size", "48x64", "--val-images", "1", "--calibration-count", "2", "--threads", "1",
           "--paths", "torch-bf16", "openvino-bf16", "ort-int8", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(root / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(out.read_text())[0]
    assert set(rec["paths"]) == {"torch-bf16", "openvino-bf16", "ort-int8"} and rec["images"] == 1
    for p in rec["paths"].values():
        assert 0.5 < p["argmax_agreement"] <= 1.0 and p["pass"] == (abs(p["miou_change"]) < p["goal"])
    assert "| espnet-c | random |" in proc.stdout
