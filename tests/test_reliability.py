"""Reliability, second round (issue 30): caches keyed by content, outputs that never look finished before they are,
exports at the size they will meet, predictions that say what they did. The one-line errors are in test_bad_inputs.py."""
from __future__ import annotations

import json
import os
import stat
import time

import numpy as np
import pytest
import torch
from PIL import Image

import rtseg
from rtseg.cli import main
from rtseg.deploy.video import VideoError, predict_video
from rtseg.io import save_weights
from rtseg.registry import InvalidOptionError
from test_trainer import TINY


def _image(path, h=24, w=32, value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


# -- caches keyed by content, never filled before a check ------------------------------------------------
def test_two_urls_ending_in_the_same_file_name_give_their_own_weights(http_files, tmp_path, monkeypatch):
    served, base, _ = http_files
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    weights = []
    for i, folder in enumerate(("a", "b")):
        torch.manual_seed(i)
        model = rtseg.create_model("espnet-c", num_classes=3, q=2)
        (served / folder).mkdir()
        save_weights(served / folder / "w.safetensors", model, model.rtseg_card)
        weights.append(model.state_dict())
    for i, folder in enumerate(("a", "b")):
        loaded = rtseg.create_model("espnet-c", weights=f"{base}/{folder}/w.safetensors")
        assert all(torch.equal(loaded.state_dict()[k], weights[i][k]) for k in weights[i])


def test_a_file_url_is_never_copied_into_the_cache_and_a_non_weights_download_never_enters_it(http_files, tmp_path, monkeypatch, capsys):
    served, base, _ = http_files
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    image = _image(tmp_path / "img.png")
    assert main(["predict", "espnet-c", str(image), "--out", str(tmp_path / "p"), "--weights", passwd.as_uri()]) == 2
    assert "not a weights file (a text file)" in capsys.readouterr().err
    (served / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert main(["predict", "espnet-c", str(image), "--out", str(tmp_path / "p"), "--weights", f"{base}/passwd"]) == 2
    assert "not a weights file" in capsys.readouterr().err
    cache = tmp_path / "cache" / "weights"
    assert not cache.exists() or not list(cache.iterdir())


def test_a_model_too_large_to_be_real_is_refused_before_it_is_built():
    t0 = time.perf_counter()
    with pytest.raises(InvalidOptionError, match="more than 200,000,000 parameters"):
        rtseg.create_model("espnet", num_classes=1_000_000)
    with pytest.raises(InvalidOptionError, match="stage3_modules must be an integer 1..64"):
        rtseg.create_model("fplnet", stage3_modules=10**9)
    assert time.perf_counter() - t0 < 10


# -- outputs are complete or absent --------------------------------------------------------------------
def _frames(folder, n=6, size=(24, 32)):
    return [_image(folder / f"{i:03d}.png", *size, value=20 * i) for i in range(n)]


def test_an_interrupted_video_leaves_no_file_under_the_final_name(tmp_path):
    pytest.importorskip("cv2")
    frames = _frames(tmp_path / "frames")
    calls = []

    def segment(rgb):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # SIGINT in the middle of the video
        return np.zeros(rgb.shape[:2], np.uint8)

    out = tmp_path / "out" / "v_overlay.mp4"
    with pytest.raises(KeyboardInterrupt):
        predict_video(segment, "frames", out, [(0, 0, 0)], frames=frames)
    assert not out.exists() and not list(out.parent.iterdir())


def test_a_frame_size_error_leaves_no_video_and_a_complete_run_leaves_one(tmp_path):
    pytest.importorskip("cv2")
    frames = _frames(tmp_path / "frames", 3) + [_image(tmp_path / "frames" / "999.png", 30, 40)]
    out = tmp_path / "out" / "v_overlay.mp4"
    with pytest.raises(VideoError, match="a video needs one size"):
        predict_video(lambda rgb: np.zeros(rgb.shape[:2], np.uint8), "frames", out, [(0, 0, 0)], frames=frames)
    assert not list(out.parent.iterdir())
    rec = predict_video(lambda rgb: np.zeros(rgb.shape[:2], np.uint8), "frames", out, [(0, 0, 0)], frames=frames[:3])
    assert rec["frames"] == 3 and out.is_file() and [p.name for p in out.parent.iterdir()] == [out.name]


def test_a_failed_export_leaves_neither_a_file_nor_its_staging_folder(tmp_path, monkeypatch):
    from rtseg.deploy import onnx_export

    def half_written(model, path, *args, **kwargs):
        open(path, "wb").write(b"half an onnx file")
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "export_onnx", half_written)
    out = tmp_path / "exports" / "m.onnx"
    with pytest.raises(KeyboardInterrupt):
        rtseg.tasks.export("espnet-c", out, size=(32, 32))
    assert not list(out.parent.iterdir())


def test_previous_export_stays_until_the_new_one_is_complete(tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous export")
    from rtseg.deploy import onnx_export

    def failing(model, path, *args, **kwargs):
        open(path, "wb").write(b"partial")
        raise onnx_export.ExportError("verification failed")

    monkeypatch.setattr(onnx_export, "export_onnx", failing)
    with pytest.raises(onnx_export.ExportError):
        rtseg.tasks.export("espnet-c", out, size=(32, 32))
    assert out.read_bytes() == b"previous export" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_a_start_that_fails_removes_the_run_folder_it_created(tmp_path, capsys):
    out = tmp_path / "runs" / "new"
    assert main(["train", "demo", *TINY, "train.threads=100000", "--out", str(out), "--quiet"]) == 2
    assert "train.threads" in capsys.readouterr().err
    assert not out.exists()


def test_every_file_of_a_run_has_one_mode_that_honours_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert main(["train", "demo", *TINY, "train.epochs=1", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o640}, modes


# -- exports at the size they will meet; predictions that say what they did -----------------------------
def test_export_defaults_to_the_cards_size_and_verifies_there(tmp_path):
    rec = rtseg.tasks.export("fplnet", tmp_path / "f.onnx", weights="camvid")
    assert rec["input_size"] == [360, 480] and "card" in rec["size_from"]
    assert rec["verification"]["size"] == [360, 480] and rec["verification"]["argmax_agreement"] == 1.0
    untrained = rtseg.tasks.export("espnet-c", tmp_path / "e.onnx", verify=False)
    assert untrained["input_size"] == [512, 1024] and "default" in untrained["size_from"]


def test_a_fixed_size_export_says_when_it_changes_the_aspect_ratio(tmp_path, capsys):
    rtseg.tasks.export("espnet-c", tmp_path / "m.onnx", size=(64, 128), verify=False)
    images = [_image(tmp_path / "in" / f"{i}.png", 48, 48) for i in range(2)]
    assert main(["predict", str(tmp_path / "m.onnx"), *map(str, images), "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert err.count("takes 64x128 (HxW) inputs") == 1 and "aspect ratio (1.00 -> 2.00)" in err and "--dynamic" in err


def test_predict_size_card_and_the_note_on_images_far_from_it(tmp_path, capsys):
    big = _image(tmp_path / "big.png", 720, 1280)
    assert main(["predict", "fplnet", "--weights", "camvid", str(big), "--out", str(tmp_path / "a"), "--no-legend"]) == 0
    err = capsys.readouterr().err
    assert "720x1280 (HxW), far from the 360x480" in err and "--size card" in err
    assert main(["predict", "fplnet", "--weights", "camvid", str(big), "--out", str(tmp_path / "b"), "--size", "card"]) == 0
    assert "far from" not in capsys.readouterr().err
    assert Image.open(tmp_path / "b" / "big_mask.png").size == (1280, 720)  # resized for the network, back to the image size
    assert main(["predict", "espnet-c", str(big), "--out", str(tmp_path / "c"), "--size", "card"]) == 2
    assert "records no training or evaluation size" in capsys.readouterr().err


def test_overlays_carry_a_legend_of_the_classes_present(tmp_path):
    from rtseg.data.labels import CAMVID
    from rtseg.inference import draw_legend, present_classes

    labels = np.zeros((120, 160), np.uint8)
    labels[60:] = 3  # road below sky
    labels[100:, :10] = 8
    found = present_classes(labels, CAMVID)
    assert [name for _, name, _, _ in found] == ["sky", "road", "car"] and abs(sum(f[3] for f in found) - 1) < 1e-9
    plain = np.full((120, 160, 3), 128, np.uint8)
    drawn = draw_legend(plain, labels, CAMVID)
    changed = np.argwhere((drawn != plain).any(2))
    assert changed.size and changed[:, 0].max() < 60 and changed[:, 1].max() < 100  # a panel in the top-left corner only
    swatch_colours = {tuple(int(v) for v in c) for c in drawn.reshape(-1, 3)}
    assert {CAMVID.palette[0], CAMVID.palette[3], CAMVID.palette[8]} <= swatch_colours
    assert CAMVID.palette[5] not in swatch_colours  # tree is absent: no swatch for it


def test_predict_into_its_input_folder_skips_its_own_outputs(tmp_path, capsys):
    folder = tmp_path / "photos"
    _image(folder / "a.png")
    for _ in range(2):
        assert main(["predict", "espnet-c", str(folder), "--out", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_mask.png", "a_overlay.png"]
    assert "skipped 2 file(s)" in capsys.readouterr().err


def test_an_output_name_too_long_for_the_file_system_skips_that_input_and_goes_on(tmp_path, capsys):
    folder = tmp_path / "in"
    _image(folder / ("x" * 250 + ".png"))
    _image(folder / "ok.png")
    assert main(["predict", "espnet-c", str(folder), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert "too long for this file system; skipped" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["ok_mask.png", "ok_overlay.png"]


def test_overrides_after_an_option_are_taken_as_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "demo", "--out", str(out), *TINY, "train.epochs=1", "--print-config"]) == 0
    assert "epochs: 1" in capsys.readouterr().out
    assert main(["train", "demo", "--out", str(out), "--bogus", "x"]) == 2
    assert "unrecognized arguments: --bogus x" in capsys.readouterr().err


def test_help_names_every_export_format(capsys):
    assert main(["--help"]) == 0
    assert "ONNX, OpenVINO IR or TorchScript" in " ".join(capsys.readouterr().out.split())


def test_card_json_round_trip_keeps_a_valid_card_and_names_the_file_of_a_bad_one(tmp_path):
    from rtseg.card import CardError, ModelCard

    model = rtseg.create_model("espnet-c", num_classes=3, q=2)
    card = model.rtseg_card
    assert ModelCard.from_json(card.to_json()) == card
    data = json.loads(card.to_json())
    data["normalization"]["std"] = [1.0, -1.0, 1.0]
    with pytest.raises(CardError, match="^weights file 'x.safetensors': model card of 'espnet-c' is malformed: normalization std"):
        ModelCard.from_dict(data, "weights file 'x.safetensors'")
