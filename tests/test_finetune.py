"""Runs that start from trained weights: model.weights (onto the same or other classes), train.freeze, resume checks."""
import json

import numpy as np
import pytest
import torch
from conftest import resumed_run_matches_uninterrupted
from PIL import Image

from rtseg.cli import main
from rtseg.config import load_config
from rtseg.engine.trainer import Trainer, train
from rtseg.io import load_checkpoint, read_weights
from rtseg.models.class_layers import class_layer_paths, match_classes, transfer_class_weights
from rtseg.pretrained import get_pretrained
from rtseg.registry import create_model, list_models, read_card

TINY = ["data.image_size=[48,64]", "data.train_samples=4", "data.val_samples=2", "train.batch_size=2", "train.epochs=1",
        "train.max_iters_per_epoch=2", "train.threads=1", "train.num_workers=0", "train.precision=fp32", "train.compile=off",
        "logging.loggers=[csv]", "train.tensorboard=false"]


def _class_dependent(name: str) -> set[str]:
    with torch.device("meta"):
        a = create_model(name, num_classes=11).state_dict()
        b = create_model(name, num_classes=13).state_dict()
    return {k for k in a if a[k].shape != b[k].shape}


@pytest.mark.parametrize("name", list_models())
def test_declared_class_layers_hold_every_tensor_whose_size_follows_the_class_count(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=11)
    paths = class_layer_paths(model)
    assert paths, f"{name} declares no class layers"
    dependent = _class_dependent(name)
    outside = [k for k in dependent if not any(k.startswith(p + ".") for p in paths)]
    assert not outside, f"{name}: class-dependent tensors outside the declared class layers: {outside}"
    for path in paths:  # a declared layer that follows no class count would be re-initialised for nothing
        assert any(k.startswith(path + ".") for k in dependent), f"{name}: {path} does not depend on the class count"


def test_names_match_ignoring_case_and_the_class_map_overrides():
    old = ["Sky", "Building", "Road", "Car"]
    assert match_classes(["road", "car", "background"], old) == {0: 2, 1: 3}
    assert match_classes(["road", "vehicle"], old, {"vehicle": "car"}) == {0: 2, 1: 3}
    assert match_classes(["road", "car"], old, {"car": None}) == {0: 2}  # null: start that class afresh
    with pytest.raises(ValueError, match="model.class_map: 'truck' is not a class of the weights"):
        match_classes(["road", "car"], old, {"car": "truck"})
    with pytest.raises(ValueError, match="'lorry' is not a class of the dataset"):
        match_classes(["road", "car"], old, {"lorry": "car"})


def test_sub_pixel_head_carries_each_class_block_of_channels():
    """FarSee-Net's last sub-pixel conv has t*t channels per class (the shuffle's layout): whole blocks move."""
    src = create_model("farseenet", num_classes=5, backbone="mobilenetv2")
    dst = create_model("farseenet", num_classes=3, backbone="mobilenetv2")
    state, report = transfer_class_weights(dst, src.state_dict(), 3, 5, {0: 4, 2: 1},
                                           lambda n: create_model("farseenet", num_classes=n, backbone="mobilenetv2"))
    g = 16  # t = 4
    w, sw = state["head.conv.weight"], src.state_dict()["head.conv.weight"]
    assert torch.equal(w[0:g], sw[4 * g:5 * g]) and torch.equal(w[2 * g:3 * g], sw[1 * g:2 * g])
    assert torch.equal(w[g:2 * g], dst.state_dict()["head.conv.weight"][g:2 * g])  # the unmatched class is fresh
    assert sorted(report.carried_tensors) == ["head.conv.bias", "head.conv.weight"] and not report.reinitialised


def test_espnet_decoder_moves_what_is_per_class_and_restarts_the_rest():
    src = create_model("espnet", num_classes=12)
    dst = create_model("espnet", num_classes=11)
    state, report = transfer_class_weights(dst, src.state_dict(), 11, 12, {i: i for i in range(11)},
                                           lambda n: create_model("espnet", num_classes=n))
    assert "classifier.weight" in report.carried_tensors  # transposed conv C x C: both class dims carried
    assert torch.equal(state["classifier.weight"], src.state_dict()["classifier.weight"][:11, :11])
    assert "combine_l2_l3.1.d1.conv.weight" in report.reinitialised  # the ESP branch widths follow C // 5
    kept = [k for k in dst.state_dict() if not any(k.startswith(p + ".") for p in class_layer_paths(dst))]
    assert all(torch.equal(state[k], src.state_dict()[k]) for k in kept)


def _folder(root, classes, size=(48, 64), n_train=3, n_val=2):
    root.mkdir()
    (root / "dataset.yaml").write_text(f"classes: [{', '.join(classes)}]\n")
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            label = np.zeros(size, np.uint8)
            for c in range(len(classes)):
                label[:, c * size[1] // len(classes):] = c
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / split / f"{i}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{i}.png")
    return root


def test_zoo_weights_into_a_three_class_folder_keep_every_tensor_but_the_class_layer(tmp_path):
    root = _folder(tmp_path / "data", ["Road", "Car", "background"])
    cfg = load_config("demo", TINY + ["model.name=fplnet", "data.dataset=folder", f"data.root={root}", "model.weights=camvid"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    source, _ = read_weights(get_pretrained("fplnet", "camvid").path())
    camvid = get_pretrained("fplnet", "camvid").card.class_info.names
    got = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    changed = sorted(k for k in got if got[k].shape != source[k].shape or not torch.equal(got[k], source[k].float()))
    assert changed == ["decoder.classifier.weight"]  # the declared class layer (a transposed conv: classes on dim 1)
    w, sw = got["decoder.classifier.weight"], source["decoder.classifier.weight"].float()
    assert w.shape[1] == 3
    assert torch.equal(w[:, 0], sw[:, camvid.index("road")]) and torch.equal(w[:, 1], sw[:, camvid.index("car")])
    assert not any(torch.equal(w[:, 2], sw[:, i]) for i in range(sw.shape[1]))  # background starts afresh
    text = "\n".join(trainer.start_lines())
    assert "fplnet/camvid (sha256 " + get_pretrained("fplnet", "camvid").sha256 in text
    assert "Road <- road, Car <- car" in text and "kept 414 tensors" in text


def test_fine_tuned_run_records_its_start_weights_and_images_seen(tmp_path):
    root = _folder(tmp_path / "data", ["road", "car", "other"])
    cfg = load_config("demo", TINY + ["model.name=fplnet", "data.dataset=folder", f"data.root={root}"])
    from rtseg.tasks import train as train_task

    summary = train_task(cfg, out=tmp_path / "run", progress=False, weights="camvid")
    sha = get_pretrained("fplnet", "camvid").sha256
    assert sha in summary["start_weights"] and json.loads((tmp_path / "run" / "summary.json").read_text())["start_weights"] == summary["start_weights"]
    card = read_card(tmp_path / "run" / "best.safetensors")
    assert sha in card.training.start_weights and card.training.images_seen == summary["iterations"] * 2 == summary["images_seen"] > 0
    assert card.training.config["model"]["weights"] == "camvid"


def test_card_options_and_input_shrink_of_the_weights_apply(tmp_path):
    """FarSee-Net's zoo weights were trained on images shrunk by 2: the fine-tuning run shrinks them too."""
    root = _folder(tmp_path / "data", ["road", "car"], size=(64, 64))
    cfg = load_config("demo", TINY + ["model.name=farseenet", "data.dataset=folder", f"data.root={root}", "model.weights=camvid",
                                      "data.image_size=[64,64]"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.config["data"]["input_scale"] == 2
    assert any("data.input_scale=2" in line for line in trainer.start_lines())


def _params(model, prefix):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def test_freezing_leaves_the_frozen_tensors_unchanged_and_releases_them_after_freeze_epochs(tmp_path):
    cfg = load_config("demo", TINY + ["model.name=espnet-c", "model.options={q: 2}", "train.freeze=[encoder]", "train.freeze_epochs=1",
                                      "train.epochs=2", "optimizer.lr=0.05"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    frozen = [n for n, _ in trainer.model.named_children() if n != "classifier"]
    before = {p: _params(trainer.model, p + ".") for p in frozen}
    head = _params(trainer.model, "classifier.")
    trainer.epochs = 1
    trainer.run()
    for p in frozen:  # weights and BatchNorm statistics
        assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before[p].items()), p
    assert any(not torch.equal(v, trainer.model.state_dict()[k]) for k, v in head.items())
    resumed = Trainer(cfg, tmp_path / "run", resume=True, progress=False)
    resumed.run()  # epoch 2: released
    assert any(not torch.equal(v, resumed.model.state_dict()[k]) for k, v in before["level3"].items())


def test_resume_with_freezing_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    over = TINY + ["model.name=espnet-c", "model.options={q: 2}", "train.freeze=[level1, level2]", "train.freeze_epochs=1", "train.epochs=3"]
    resumed_run_matches_uninterrupted(over, tmp_path)


def test_per_module_rates_work_with_freezing(tmp_path):
    cfg = load_config("demo", TINY + ["model.name=espnet-c", "model.options={q: 2}", "train.freeze=[level1]",
                                      "optimizer.lr_scale={level2: 0.1}"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert [g["lr_scale"] for g in trainer.optimizer.param_groups] == [0.1, 1.0]
    before = _params(trainer.model, "level1.")
    trainer.run()
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("extra, expected", [
    (["model.name=erfnet-encoder", "--weights", "camvid"], "no pretrained weights|not a registered tag"),
    (["model.weights=no/such/file.safetensors"], "model.weights='no/such/file.safetensors'.*not a registered tag"),
    (["model.options.weights=camvid"], "model.options.weights: weights are not a build option"),
    (["train.freeze=[decodr]"], r"train.freeze\[0\]='decodr' is neither a part of ESPNetC"),
    (["model.class_map={road: tarmac}"], "model.class_map maps the classes of model.weights"),
    (["distill.teacher=espnet"], "a teacher needs trained weights: MODEL@TAG"),
    (["distill.pixels=right"], "distill.pixels.*labelled.*correct"),
])
def test_start_errors_are_one_line_before_any_work(tmp_path, capsys, extra, expected):
    import re

    out = tmp_path / "run"
    code, err = _error(capsys, ["train", "demo", *TINY, "model.name=espnet-c", *extra, "--quiet", "--out", str(out)])
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(expected, err), err
    assert not out.exists()


def test_weights_of_another_model_unreadable_files_and_bad_class_maps_are_refused(tmp_path, capsys):
    zoo = str(get_pretrained("fplnet", "camvid").path())
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a weights file at all" * 10)
    root = _folder(tmp_path / "data", ["road", "car"])
    for extra, expected in (
        (["model.name=espnet-c", f"model.weights={zoo}"], "are for model 'fplnet', not model.name='espnet-c'"),
        (["model.name=espnet-c", f"model.weights={garbage}"], "model.weights="),
        (["model.name=fplnet", "data.dataset=folder", f"data.root={root}", "model.weights=camvid", "model.class_map={car: truck}"],
         "model.class_map: 'truck' is not a class of the weights"),
    ):
        code, err = _error(capsys, ["train", "demo", *TINY, *extra, "--quiet", "--out", str(tmp_path / "r")])
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
        assert not (tmp_path / "r").exists()


def test_resume_into_a_run_of_another_model_or_classes_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "demo", *TINY, "model.name=espnet-c", "model.options={q: 2}", "--quiet", "--out", str(out)]) == 0
    before = (out / "last.pt").read_bytes()
    root = _folder(tmp_path / "data", ["road", "car"])
    for extra, expected in ((["model.name=erfnet"], "model.name: the run has 'espnet-c', now 'erfnet'"),
                            (["model.name=espnet-c", "model.options={q: 2}", "data.dataset=folder", f"data.root={root}"], "classes: the run has road, sidewalk")):
        code, err = _error(capsys, ["train", "demo", *TINY, *extra, "--quiet", "--out", str(out), "--resume"])
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert (out / "last.pt").read_bytes() == before
