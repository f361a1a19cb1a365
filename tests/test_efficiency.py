"""The one timing loop and the latency record every backend reports."""
import pytest

from rtseg.efficiency import device_sync, latency_record, time_calls


def test_time_calls_warms_up_then_interleaves_rounds_and_syncs_after_every_call():
    log = []
    calls = {"a": lambda: log.append("a"), "b": lambda: log.append("b")}
    times = time_calls(calls, warmup=2, iters=3, sync=lambda: log.append("sync"))
    assert log == ["a", "sync", "b", "sync"] * 5  # 2 warm-up rounds, then 3 timed ones, each function once a round
    assert set(times) == {"a", "b"} and all(len(v) == 3 and all(t >= 0 for t in v) for v in times.values())


def test_time_calls_can_rotate_the_order_of_each_round():
    log = []
    times = time_calls({k: (lambda k=k: log.append(k)) for k in "abc"}, warmup=0, iters=4, rotate=True)
    assert "".join(log) == "abc" "bca" "cab" "abc" and all(len(v) == 4 for v in times.values())


def test_time_calls_measures_milliseconds():
    import time

    ms = time_calls({"sleep": lambda: time.sleep(0.01)}, warmup=0, iters=2)["sleep"]
    assert all(9.0 <= t < 1000.0 for t in ms)


def test_latency_record_statistics():
    rec = latency_record([4.0, 1.0, 3.0, 2.0, 10.0], batch=2)
    assert rec["latency_ms_mean"] == pytest.approx(4.0) and rec["latency_ms_median"] == 3.0
    assert rec["latency_ms_min"] == 1.0 and rec["latency_ms_p90"] == 10.0 and rec["fps"] == pytest.approx(500.0)


def test_device_sync_only_on_cuda():
    assert device_sync("cpu") is None


def test_calibration_set_checks_its_inputs_before_any_work(tmp_path):
    from rtseg.deploy.calibration import calibration_set
    from rtseg.deploy.onnx_export import ExportError
    from rtseg.registry import create_model

    card = create_model("espnet-c", num_classes=3).rtseg_card
    with pytest.raises(ExportError, match="m.onnx: no rtseg model card.*`rtseg export`"):
        calibration_set({}, tmp_path / "m.onnx", tmp_path)
    with pytest.raises(ExportError, match="a dynamic-shape IR needs a calibration size"):
        calibration_set({"card": card, "input_size": "dynamic"}, "m.xml", tmp_path, kind="IR")
    with pytest.raises(ExportError, match="holds no images"):
        calibration_set({"card": card, "input_size": "16x24"}, "m.onnx", tmp_path)
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (40, 30), (i, 2 * i, 3 * i)).save(tmp_path / f"{i}.png")
    calib = calibration_set({"card": card, "input_size": "16x24"}, "m.onnx", tmp_path, count=2)
    inputs = list(calib.inputs())
    assert calib.size == (16, 24) and len(inputs) == 2 and inputs[0].shape == (1, 3, 16, 24) and inputs[0].dtype.name == "float32"
