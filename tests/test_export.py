"""ONNX export verified with ONNX Runtime over every registered model; TorchScript reload; the export CLI."""
import json

import numpy as np
import pytest
import torch

import rtseg
from rtseg.deploy.onnx_export import ExportError, export_onnx, read_metadata, verify_onnx
from test_optimize import randomise_batchnorm

pytest.importorskip("onnxruntime")
MODELS = rtseg.list_models()


@pytest.mark.parametrize("name", MODELS)
def test_dynamic_onnx_matches_pytorch_at_another_size(name, tmp_path):
    model = randomise_batchnorm(rtseg.create_model(name, num_classes=19))
    path = tmp_path / f"{name}.onnx"
    # traced at 64x96, checked at 72x88 inside export_onnx (sizes that need padding to the output stride)
    record = export_onnx(model, path, (64, 96), dynamic=True)
    v = record["verification"]
    assert v["size"] != [64, 96]
    assert v["max_abs_diff"] < 1e-4 and v["argmax_agreement"] >= 0.999
    # a third size, odd in both sides
    v2 = verify_onnx(model, path, (41, 57))
    assert v2["max_abs_diff"] < 1e-4 and v2["argmax_agreement"] >= 0.999


def test_static_argmax_export_carries_metadata(tmp_path):
    import onnx

    model = rtseg.create_model("espnet", num_classes=19)
    path = tmp_path / "espnet.onnx"
    export_onnx(model, path, (64, 128), argmax=True)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    out = proto.graph.output[0]
    assert out.name == "labels" and out.type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 128]
    meta = read_metadata(path)
    assert meta["input_size"] == "64x128" and meta["card"].model == "espnet"
    # an untrained network names no classes: placeholders, not another dataset's names
    assert len(meta["classes"]) == 19 and meta["classes"][0] == "class 0" and meta["card"].classes is None
    assert meta["normalization"]["name"] == "espnet" and meta["normalization"]["channel_order"] == "BGR"


def test_verification_catches_a_different_model(tmp_path):
    path = tmp_path / "a.onnx"
    export_onnx(rtseg.create_model("espnet-c"), path, (32, 32), verify=False)
    torch.manual_seed(123)
    with pytest.raises(ExportError, match="differ"):
        verify_onnx(rtseg.create_model("espnet-c"), path, (32, 32))


def test_opset_below_17_is_refused(tmp_path):
    with pytest.raises(ExportError, match="opset"):
        export_onnx(rtseg.create_model("espnet-c"), tmp_path / "a.onnx", (32, 32), opset=13)


def test_torchscript_loads_back_with_metadata(tmp_path):
    from rtseg.deploy.torchscript_export import export_torchscript, load_torchscript

    model = randomise_batchnorm(rtseg.create_model("fplnet", num_classes=19))
    record = export_torchscript(model, tmp_path / "fplnet.pt", (64, 96))
    assert record["verification"]["max_abs_diff"] < 1e-4
    loaded, meta = load_torchscript(tmp_path / "fplnet.pt")
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model(x), atol=1e-4)
    assert meta["rtseg.input_size"] == "64x96" and meta["rtseg.card"].model == "fplnet"


def test_export_cli_and_onnx_predict(tmp_path, capsys):
    from PIL import Image

    from rtseg.cli import main

    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "espnet-c", "--dynamic", "--trace-size", "64x64", "--out", str(onnx_path)]) == 0
    assert "verified: ONNX Runtime vs PyTorch" in capsys.readouterr().out
    assert main(["export", "espnet-c", "--dynamic", "--size", "64x64"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(img)
    assert main(["predict", str(onnx_path), str(img), "--out", str(tmp_path / "pred"), "--save-labels"]) == 0
    labels = np.asarray(Image.open(tmp_path / "pred" / "img_labels.png"))
    assert labels.shape == (40, 56) and labels.max() < 19


def test_bench_onnxruntime_backend(capsys):
    from rtseg.cli import main

    assert main(["bench", "espnet-c", "--backend", "onnxruntime", "--size", "64x64", "--iters", "2", "--warmup", "1", "--threads", "1"]) == 0
    assert "onnxruntime" in capsys.readouterr().out
    # a batch above 1 needs a free batch axis in the exported graph
    assert main(["bench", "espnet-c", "--backend", "onnxruntime", "--size", "32x32", "--batch", "2", "--iters", "1", "--warmup", "1"]) == 0


def test_int8_export_runs_and_keeps_metadata(tmp_path, capsys):
    from PIL import Image

    from rtseg.cli import main
    from rtseg.deploy.ort import OnnxSegmenter

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    out = tmp_path / "q.onnx"
    assert main(["export", "espnet-c", "--size", "48x64", "--int8", "--calibration", str(calib), "--out", str(out)]) == 0
    assert "calibrated on 4 images" in capsys.readouterr().out
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    meta = read_metadata(out)
    assert meta["quantization"].startswith("int8") and meta["input_size"] == "48x64"
    labels = OnnxSegmenter(out).predict(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assert labels.shape == (48, 64) and labels.max() < 19
    assert main(["export", "espnet-c", "--size", "48x64", "--int8", "--out", str(out)]) == 2
