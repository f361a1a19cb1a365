"""Model cards, weights files and named pretrained weights (downloads only from a loopback HTTP server and file:// URLs)."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import rtseg
from conftest import ROOT, shared_path
from rtseg import pretrained
from rtseg.card import CARD_VERSION, CardError, Metrics, ModelCard, TrainingRecord
from rtseg.io import CHECKPOINT_FORMAT, WeightsMismatchError, atomic_save, is_safetensors, load_checkpoint, read_card, read_weights, save_checkpoint, save_weights
from rtseg.registry import checkpoint_card
from rtseg.cli import main
from rtseg.data.labels import CAMVID, ClassInfo
from rtseg.evaluation import ClassMismatchError, class_mapping
from rtseg.hub import ChecksumError, sha256_of

THREE = ClassInfo(("water", "reed", "boat"), ((10, 20, 200), (30, 160, 40), (250, 250, 0)))


def carded_model(num_classes=3, classes=THREE):
    model = rtseg.create_model("espnet-c", num_classes=num_classes, q=2).eval()
    training = TrainingRecord(dataset="folder (lake)", images=12, recipe="demo", config={"train": {"epochs": 2}}, epochs=2,
                              iterations=6, wall_time_s=1.5, hardware="test CPU, 1 threads", torch_version=torch.__version__)
    metrics = Metrics(dataset="folder (lake)", split="val", miou=0.5, per_class_iou={"water": 0.75, "reed": 0.25, "boat": None},
                      protocol={"input_size": [32, 32], "flip": False}, pixel_accuracy=0.8, images=3, epoch=2)
    model.rtseg_card = model.rtseg_card.replace(classes=classes, training=training, metrics=(metrics,), license="CC-BY-4.0")
    return model


def test_card_round_trips_through_plain_json_and_refuses_what_it_cannot_read():
    card = carded_model().rtseg_card
    data = json.loads(json.dumps(card.to_dict()))
    assert ModelCard.from_dict(data) == card and ModelCard.from_json(card.to_json()) == card
    assert data["version"] == CARD_VERSION == 2 and data["classes"]["names"] == ["water", "reed", "boat"]
    with pytest.raises(CardError, match="newer"):
        ModelCard.from_dict({**data, "version": 99})
    with pytest.raises(CardError, match="unknown field.*colour"):
        ModelCard.from_dict({**data, "colour": "red"})
    with pytest.raises(CardError, match="not an rtseg model card"):
        ModelCard.from_dict({"model": "espnet"})
    with pytest.raises(CardError, match="4 class names but only 3 outputs"):
        card.replace(classes=ClassInfo.unnamed(4))


def test_card_round_trips_through_checkpoint_safetensors_onnx_and_torchscript(tmp_path):
    from rtseg.deploy.onnx_export import export_onnx, read_metadata
    from rtseg.deploy.torchscript_export import export_torchscript, load_torchscript

    model = carded_model()
    card = model.rtseg_card
    ckpt = save_checkpoint(tmp_path / "m.pt", model, epoch=1)
    assert checkpoint_card(load_checkpoint(ckpt)) == card  # load_checkpoint reads with weights_only=True
    weights = save_weights(tmp_path / "m.safetensors", model, card)
    assert is_safetensors(weights) and read_card(weights) == card
    half = save_weights(tmp_path / "m16.safetensors", model, card, half=True)
    state, _ = read_weights(half)
    assert state["classifier.conv.weight"].dtype == torch.float16 and half.stat().st_size < 0.6 * weights.stat().st_size
    x = torch.randn(1, 3, 32, 32)
    for path in (ckpt, weights, half):
        rebuilt = rtseg.create_model("espnet-c", weights=str(path)).eval()
        assert rebuilt.rtseg_card == card
        with torch.inference_mode():
            assert torch.allclose(rebuilt(x), model(x), atol=1e-2 if path == half else 1e-6)
    export_onnx(model, tmp_path / "m.onnx", (32, 32))
    assert read_metadata(tmp_path / "m.onnx")["card"] == card
    export_torchscript(model, tmp_path / "m.ts", (32, 32))
    assert load_torchscript(tmp_path / "m.ts")[1]["rtseg.card"] == card


def test_float16_weights_storage_keeps_vectors_in_float32(tmp_path):
    model = carded_model()
    mixed = save_weights(tmp_path / "mixed.safetensors", model, model.rtseg_card, half="weights")
    state, _ = read_weights(mixed)
    reference = model.state_dict()
    vectors = [k for k, v in reference.items() if v.is_floating_point() and v.dim() <= 1]
    matrices = [k for k, v in reference.items() if v.is_floating_point() and v.dim() > 1]
    assert vectors and matrices
    assert all(state[k].dtype == torch.float32 and torch.equal(state[k], reference[k]) for k in vectors)
    assert all(state[k].dtype == torch.float16 for k in matrices)
    rebuilt = rtseg.create_model("espnet-c", weights=str(mixed)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(rebuilt(x), model.eval()(x), atol=1e-2)
    with pytest.raises(ValueError, match="half="):
        save_weights(tmp_path / "bad.safetensors", model, model.rtseg_card, half="vectors")


def test_checkpoint_written_before_cards_loads_with_a_derived_card(tmp_path):
    model = rtseg.create_model("espnet-c", num_classes=11, q=2)
    old = {"format": CHECKPOINT_FORMAT, "model": {"name": "espnet-c", "num_classes": 11, "options": {"q": 2}}, "normalization": "imagenet",
           "model_state": model.state_dict(), "epoch": 4, "config": {"recipe": "camvid-small", "data": {"dataset": "camvid"}}}
    atomic_save(old, tmp_path / "old.pt")
    loaded = rtseg.create_model("espnet-c", weights=str(tmp_path / "old.pt"))
    card = loaded.rtseg_card
    assert card.classes == CAMVID and card.normalization.name == "imagenet" and card.options == {"q": 2}
    assert card.training.epochs == 5 and card.training.recipe == "camvid-small" and "before model cards" in card.notes


@pytest.fixture
def registered(tmp_path, monkeypatch, http_files):
    """A temporary table entry whose file is served over loopback HTTP, with an empty cache."""
    served, base, _ = http_files
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "_TABLE", dict(pretrained._TABLE))
    model = carded_model()
    source = served / "lake.pth"
    torch.save(model.state_dict(), source)  # a bare state dict: the card comes from the table
    entry = pretrained.register_pretrained(pretrained.PretrainedWeights(
        "espnet-c", "lake", sha256_of(source), model.rtseg_card.replace(options={"q": 2}), url=f"{base}/lake.pth"))
    return entry, source


def test_tag_downloads_from_the_url_into_the_cache_checked_by_hash(registered, tmp_path):
    entry, source = registered
    model = rtseg.create_model("espnet-c", weights="lake")
    assert model.rtseg_card == entry.card and model.rtseg_card.classes == THREE
    cached = list((tmp_path / "cache" / "weights").iterdir())
    assert [p.name for p in cached] == [f"espnet-c_lake-{entry.sha256[:8]}.pth"]
    source.unlink()  # the cached copy serves from now on
    assert rtseg.create_model("espnet-c", weights="lake").rtseg_card == entry.card
    with pytest.raises(ValueError, match="no pretrained weights .lakes.*its tags: cityscapes-official, lake"):
        rtseg.get_pretrained("espnet-c", "lakes")
    with pytest.raises(ValueError, match="not a registered tag \\(tags: cityscapes-official, lake\\), a URL"):
        rtseg.create_model("espnet-c", weights="lakes")


def test_wrong_hash_is_a_clear_error_and_caches_nothing(registered, tmp_path, monkeypatch):
    entry, source = registered
    bad = pretrained.PretrainedWeights("espnet-c", "bad", "0" * 64, entry.card, url=entry.url)
    pretrained.register_pretrained(bad)
    with pytest.raises(ChecksumError, match=f"SHA-256 {sha256_of(source)} does not match the expected 0000"):
        rtseg.create_model("espnet-c", weights="bad")
    assert not any((tmp_path / "cache" / "weights").iterdir())
    assert main(["eval", "espnet-c", "--weights", "bad", "--quiet"]) == 2


def test_a_renamed_local_file_and_a_plain_url_are_recognised_by_hash(registered, tmp_path):
    entry, source = registered
    renamed = tmp_path / "elsewhere" / "whatever-name.bin"
    renamed.parent.mkdir()
    shutil.copy(source, renamed)
    assert rtseg.create_model("espnet-c", weights=str(renamed)).rtseg_card == entry.card
    other = tmp_path / "other.pth"
    shutil.copy(source, other)
    assert rtseg.create_model("espnet-c", weights=other.as_uri()).rtseg_card == entry.card
    with pytest.raises(WeightsMismatchError, match="for model 'espnet-c', not 'espnet'"):
        rtseg.create_model("espnet", weights=str(renamed))
    with pytest.raises(WeightsMismatchError, match="have 3 outputs.*num_classes=19 contradicts"):
        rtseg.create_model("espnet-c", num_classes=19, weights=str(renamed))


def test_shipped_files_get_their_card_from_the_file(tmp_path, monkeypatch):
    model = carded_model()
    path = save_weights(tmp_path / "espnet-c-lake.safetensors", model, model.rtseg_card)
    entry = pretrained.PretrainedWeights.shipped(str(path), "lake", sha256_of(path))  # an absolute path stands in for package data
    assert entry.model == "espnet-c" and entry.card == model.rtseg_card and entry.path() == path
    assert "| espnet-c | lake | folder (lake) | 3 | folder (lake) val mIoU 0.500 |" in pretrained.pretrained_table([entry])


def test_class_mismatch_is_an_error_naming_both_lists_unless_mapped():
    with pytest.raises(ClassMismatchError, match=r"3 classes \[water, reed, boat\].*11 classes \[sky, building"):
        class_mapping(THREE, 3, CAMVID)
    with pytest.raises(ClassMismatchError, match="19 unnamed outputs"):
        class_mapping(None, 19, CAMVID)
    assert class_mapping(CAMVID, 12, CAMVID) is None  # an extra void output needs no map
    lut = class_mapping(THREE, 4, CAMVID, {"water": "sky", "boat": "car"})
    assert lut.tolist() == [0, 11, 8, 11]  # unmapped and void outputs land outside the classes: counted wrong
    with pytest.raises(ClassMismatchError, match="'ship' is not a model class"):
        class_mapping(THREE, 3, CAMVID, {"ship": "car"})


def _lake(root, n=3, size=(24, 32)):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            label = np.zeros(size, np.uint8)
            label[size[0] // 2:] = 1
            label[4:10, 4:12] = 2
            image = np.array(THREE.palette, np.uint8)[label] + rng.integers(0, 20, (*size, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{i}.png")
    (root / "dataset.yaml").write_text("classes: [water, reed, boat]\npalette: [[10, 20, 200], [30, 160, 40], [250, 250, 0]]\n")
    return root


def test_folder_run_carries_its_classes_and_palette_everywhere(tmp_path, capsys):
    root = _lake(tmp_path / "lake")
    run = tmp_path / "run"
    assert main(["train", "demo", "model.name=espnet-c", "model.options={q: 2}", "data.dataset=folder", f"data.root={root}",
                 "data.image_size=[24,32]", "data.crop_size=[24,32]", "train.batch_size=3", "train.epochs=1", "train.threads=1",
                 "--out", str(run), "--quiet"]) == 0
    card = checkpoint_card(load_checkpoint(run / "best.pt"))
    assert card.classes == THREE
    assert card.training.dataset == "folder (lake)" and card.training.epochs == 1 and card.training.hardware
    assert card.metrics[0].split == "val" and set(card.metrics[0].per_class_iou) == {"water", "reed", "boat"}
    assert read_card(run / "best.safetensors") == card and checkpoint_card(load_checkpoint(run / "last.pt")).classes == THREE
    assert main(["export", str(run / "best.safetensors"), "--size", "24x32", "--out", str(tmp_path / "lake.onnx")]) == 0
    from rtseg.deploy.onnx_export import read_metadata

    meta = read_metadata(tmp_path / "lake.onnx")
    assert meta["classes"] == ["water", "reed", "boat"] and meta["palette"] == [list(c) for c in THREE.palette] and meta["card"] == card
    for model in (str(run / "best.pt"), str(tmp_path / "lake.onnx")):
        out = tmp_path / "pred" / model.rsplit(".", 1)[1]
        assert main(["predict", model, str(root / "images" / "val" / "0.png"), "--out", str(out)]) == 0
        colours = {tuple(c) for c in np.asarray(Image.open(out / "0_mask.png")).reshape(-1, 3).tolist()}
        assert colours and colours <= set(THREE.palette)
    # the same checkpoint on a dataset with other classes stops before any work, naming both lists
    capsys.readouterr()
    assert main(["eval", str(run / "best.pt"), "--data", "synthetic", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "[water, reed, boat]" in err and "[road, sidewalk" in err and "--class-map" in err
    mapping = tmp_path / "map.yaml"
    mapping.write_text("water: sky\nreed: vegetation\n")
    assert main(["eval", str(run / "best.pt"), "--data", "synthetic", "--samples", "2", "--class-map", str(mapping), "--quiet",
                 "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["protocol"]["class_map"] == {"water": "sky", "reed": "vegetation"}


def test_export_weights_command_writes_a_publishable_file(tmp_path, capsys):
    model = carded_model()
    save_checkpoint(tmp_path / "best.pt", model, epoch=0)
    assert main(["export-weights", str(tmp_path / "best.pt"), "--half", "--license", "MIT", "--source", "test run"]) == 0
    card = read_card(tmp_path / "best.safetensors")
    assert card == model.rtseg_card.replace(license="MIT", source="test run")
    assert "float16" in capsys.readouterr().out
    # bench reads the card too: no class count to repeat by hand
    assert main(["bench", str(tmp_path / "best.safetensors"), "--size", "32x32", "--iters", "1", "--warmup", "1",
                 "--json", str(tmp_path / "b.json")]) == 0
    assert "water, reed, boat" in json.loads((tmp_path / "b.json").read_text())["card"]


def test_models_pretrained_lists_the_official_espnet_files(capsys):
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    for row in ("| espnet | camvid-official | camvid | 11 + 1 void |", "| espnet | cityscapes-official | cityscapes | 19 + 1 void |",
                "| espnet-c | cityscapes-official | cityscapes | 19 + 1 void |"):
        assert row in out
    assert "github.com/sacmehta/ESPNet" in out
    readme = (ROOT / "README.md").read_text()
    assert out.strip() in readme, "README's pretrained table is not what `rtseg models --pretrained` prints"
    official = [e for e in rtseg.list_pretrained() if e.tag.endswith("-official")]
    assert len(official) == 3 and out.count("| official ESPNet release") == 3
    assert all(e.url.startswith("https://github.com/sacmehta/ESPNet/raw/master/pretrained/") for e in official)
    zoo = [e for e in rtseg.list_pretrained() if e.tag.startswith("camvid") and not e.tag.endswith("-official")]  # every round ships in the package
    assert all(e.url is None and e.file is not None for e in zoo)
    assert out.count("| rtseg CamVid zoo |") == len(zoo)


# -- the official ESPNet files (../shared) --------------------------------------------------------
@pytest.mark.parametrize("file,model,tag", [("decoder_espnet_p_2_q_8.pth", "espnet", "cityscapes-official"),
                                            ("decoder_espnet_p_2_q_8_camvid.pth", "espnet", "camvid-official"),
                                            ("encoder_espnet_p_2_q_8.pth", "espnet-c", "cityscapes-official")])
def test_official_files_are_recognised_by_hash_under_any_name(tmp_path, file, model, tag):
    renamed = tmp_path / "renamed.bin"
    shutil.copy(shared_path("weights", "espnet", file), renamed)
    net = rtseg.create_model(model, weights=str(renamed))
    assert net.rtseg_card == rtseg.get_pretrained(model, tag).card


def test_camvid_normalisation_preset_matches_the_training_images():
    from rtseg.data.normalization import PRESETS

    files = sorted(shared_path("data", "camvid", "train").glob("*.png"))
    assert len(files) == 367
    means, stds = [], []
    for f in files:  # per image, per BGR channel, then averaged over the images (the official loadData.py)
        bgr = np.asarray(Image.open(f).convert("RGB"))[:, :, ::-1].reshape(-1, 3).astype(np.float64)
        means.append(bgr.mean(0))
        stds.append(bgr.std(0))
    preset = PRESETS["espnet-camvid"]
    assert np.allclose(np.mean(means, 0), preset.mean, atol=1e-6) and np.allclose(np.mean(stds, 0), preset.std, atol=1e-6)
    assert preset.channel_order == "BGR" and preset.post_scale == pytest.approx(1 / 255)


def test_official_camvid_file_through_the_cli_equals_the_official_preprocessing(tmp_path):
    """The issue's command line on a few validation images, against the official pipeline written out by hand."""
    from rtseg.metrics import ConfusionMatrix

    camvid = shared_path("data", "camvid")
    root = tmp_path / "camvid"
    names = sorted(p.name for p in (camvid / "val").glob("*.png"))[::25]
    for folder in ("val", "valannot"):
        (root / folder).mkdir(parents=True)
        for n in names:
            (root / folder / n).symlink_to(camvid / folder / n)
    weights = tmp_path / "espnet.pth"
    shutil.copy(shared_path("weights", "espnet", "decoder_espnet_p_2_q_8_camvid.pth"), weights)
    assert main(["eval", "espnet", "--weights", str(weights), "--data", "camvid", "--root", str(root), "--split", "val",
                 "--quiet", "--json", str(tmp_path / "m.json")]) == 0
    got = json.loads((tmp_path / "m.json").read_text())

    net = rtseg.create_model("espnet", num_classes=12, decoder_skip="level1-image")
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=False)
    mean = np.array([110.33102643430219, 108.40886315470783, 105.03319368755685])
    std = np.array([72.12571015416097, 72.69074533734673, 69.90434816160987])
    cm = ConfusionMatrix(11)
    for n in names:
        bgr = np.asarray(Image.open(camvid / "val" / n).convert("RGB"))[:, :, ::-1].astype(np.float64)
        x = torch.from_numpy(((bgr - mean) / std / 255.0).transpose(2, 0, 1).copy()).float()[None]
        label = torch.from_numpy(np.asarray(Image.open(camvid / "valannot" / n)).astype(np.int64))
        with torch.inference_mode():
            cm.update(net.eval()(x).argmax(1)[0], label)  # label 11 (void) is outside the 11 classes: not scored
    assert got["miou"] == pytest.approx(cm.mean_iou(), abs=1e-6) and got["dataset"]["images"] == len(names) == 5
    assert list(got["per_class_iou"]) == list(CAMVID.names) and got["miou"] > 0.5
