"""The CamVid zoo: every shipped weights file loads into its registered model and its card agrees with the table."""
import json
import re

import pytest
import torch

from conftest import ROOT, load_script
from rtseg import create_model, list_models
from rtseg.card import card_of
from rtseg.data.labels import CAMVID
from rtseg.hub import sha256_of
from rtseg.pretrained import PACKAGE_DIR, list_pretrained

INDEX = PACKAGE_DIR / "camvid" / "index.json"
ZOO = [e for e in list_pretrained() if e.tag.startswith("camvid") and e.file is not None]  # every round rtseg ships
IDS = [f"{e.model}@{e.tag}" for e in ZOO]


def _index_key(entry) -> str:
    return entry.model if entry.tag == "camvid" else f"{entry.model}@{entry.tag}"


def test_index_and_table_agree():
    index = json.loads(INDEX.read_text()) if INDEX.is_file() else {}
    assert sorted(index) == sorted(_index_key(e) for e in ZOO)
    total = sum((PACKAGE_DIR / e.file).stat().st_size for e in ZOO)
    assert total < 60 * 2**20, f"shipped CamVid weights take {total / 2**20:.1f} MiB; the budget is 60 MB"


@pytest.mark.skipif(not ZOO, reason="no CamVid zoo weights are published yet (tools/publish_zoo.py writes them)")
@pytest.mark.parametrize("entry", ZOO, ids=IDS)
def test_published_weights_load_and_match_their_card(entry):
    assert entry.model in list_models()
    assert sha256_of(PACKAGE_DIR / entry.file) == entry.sha256
    model = create_model(entry.model, weights=entry.tag).eval()
    card = card_of(model)
    assert card.model == entry.model and card.num_outputs == CAMVID.num_classes
    assert tuple(card.classes.names) == tuple(CAMVID.names)
    assert card.training is not None and card.training.dataset == "camvid" and card.training.epochs
    assert card.training.wall_time_s and card.training.hardware and card.training.recipe.startswith(f"camvid-{entry.model}")
    # the first round from scratch; a later one says what it continued from, and both that nothing came from ImageNet
    assert ("from scratch" in card.notes) if entry.tag == "camvid" else ("continued from" in card.notes and "no ImageNet" in card.notes)
    # weights averaged during training say so (a user fine-tuning them should know they are not one step's)
    ema = ((card.training.config or {}).get("train") or {}).get("ema")
    assert ("exponential moving average" in card.notes) == (ema is not None), card.notes
    # a continued round names the zoo file it started from by a SHA-256 that a shipped file still has (republishing
    # that file with a new card would break the chain of provenance and of the compute the table sums)
    if card.training.start_weights:
        start_sha = re.search(r"sha256 ([0-9a-f]{64})", card.training.start_weights).group(1)
        assert start_sha in {e.sha256 for e in ZOO}, f"{entry.model}@{entry.tag} started from {card.training.start_weights}"
    (metric,) = card.metrics
    assert metric.dataset == "camvid" and metric.split == "val" and metric.images == 101
    assert set(metric.per_class_iou) == set(CAMVID.names)
    assert 0.0 < metric.miou <= 1.0 and "rtseg eval" in metric.protocol["command"]
    # the weights are the trained ones, not a fresh initialisation
    fresh = create_model(entry.model, num_classes=CAMVID.num_classes)
    trained = model.state_dict()
    assert any(not torch.equal(v.float(), trained[k].float()) for k, v in fresh.state_dict().items() if v.is_floating_point())
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 96, 128))
    s = card.input_scale  # FarSee-Net sees the frame shrunk and predicts at the frame's size
    assert out.shape == (1, CAMVID.num_classes, 96 * s, 128 * s) and torch.isfinite(out).all()


@pytest.mark.skipif(not ZOO, reason="no CamVid zoo weights are published yet (tools/publish_zoo.py writes them)")
@pytest.mark.parametrize("entry", ZOO, ids=IDS)
def test_published_file_is_stored_as_its_index_says(entry):
    from rtseg.io import read_weights

    storage = json.loads(INDEX.read_text())[_index_key(entry)]["storage"]
    state, _ = read_weights(PACKAGE_DIR / entry.file)
    floats = {k: v for k, v in state.items() if v.is_floating_point()}
    expected = {"fp32": lambda v: torch.float32, "fp16": lambda v: torch.float16,
                "fp16-weights": lambda v: torch.float16 if v.dim() > 1 else torch.float32}[storage]
    assert all(v.dtype == expected(v) for v in floats.values()), storage


@pytest.mark.skipif(not ZOO, reason="no CamVid zoo weights are published yet (tools/publish_zoo.py writes them)")
@pytest.mark.parametrize("entry", ZOO, ids=IDS)
def test_rtseg_eval_reproduces_the_card(entry, tmp_path):
    """The acceptance command on all 101 CamVid val images gives the card's val mIoU to 0.002."""
    from conftest import shared_path

    from rtseg.cli import main

    root = shared_path("data", "camvid")
    out = tmp_path / "eval.json"
    assert main(["eval", entry.model, "--weights", entry.tag, "--data", "camvid", "--root", str(root), "--split", "val",
                 "--quiet", "--json", str(out)]) == 0
    measured = json.loads(out.read_text())
    (metric,) = entry.card.metrics
    assert measured["dataset"]["images"] == 101
    assert abs(measured["miou"] - metric.miou) <= 0.002, (measured["miou"], metric.miou)


@pytest.mark.skipif(not ZOO, reason="no CamVid zoo weights are published yet (tools/publish_zoo.py writes them)")
@pytest.mark.parametrize("entry", ZOO, ids=IDS)
def test_rtseg_predict_segments_a_camvid_frame(entry, tmp_path):
    """``rtseg predict MODEL --weights camvid FRAME`` paints a val frame, and its labels match the annotation."""
    import numpy as np
    from PIL import Image

    from conftest import shared_path

    from rtseg.cli import main

    root = shared_path("data", "camvid")
    frame = sorted((root / "val").glob("*.png"))[0]
    assert main(["predict", entry.model, "--weights", entry.tag, str(frame), "--out", str(tmp_path), "--save-labels", "--quiet"]) == 0
    predicted = np.asarray(Image.open(tmp_path / f"{frame.stem}_labels.png"))
    truth = np.asarray(Image.open(root / "valannot" / frame.name))
    assert predicted.shape == truth.shape and (tmp_path / f"{frame.stem}_overlay.png").is_file()
    scored = truth < CAMVID.num_classes  # void not scored
    accuracy = float((predicted[scored] == truth[scored]).mean())
    assert accuracy > 0.8, accuracy  # a trained network, not chance (1/11)
    assert len(np.unique(predicted)) >= 4  # a scene, not one class


def test_readme_model_table_quotes_every_published_card():
    """The README's CamVid column gives each zoo network's card mIoU (3 decimals), so a republished card cannot go stale."""
    readme = (ROOT / "README.md").read_text()
    models_section = readme.split("## Models", 1)[1].split("\n## ", 1)[0]
    quoted = {m: float(v) for v, m in re.findall(r"\*\*(\d\.\d{3})\*\* \(`([a-z0-9-]+)`", models_section)}
    best = {}
    for entry in ZOO:  # the README shows each network's best weights
        if entry.model not in best or entry.card.metrics[0].miou > best[entry.model].card.metrics[0].miou:
            best[entry.model] = entry
    assert sorted(quoted) == sorted(best)
    for entry in best.values():
        (metric,) = entry.card.metrics
        assert quoted[entry.model] == round(metric.miou, 3), f"README quotes {entry.model} at {quoted[entry.model]}"


def test_record_deployment_writes_only_the_named_rounds_entries(tmp_path):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"fplnet": {"tag": "camvid"}, "fplnet@camvid-v2": {"tag": "camvid-v2"}}))
    record = {"model": "fplnet", "data": "camvid", "split": "val", "images": 101, "size": [360, 480], "miou_fp32": 0.6851,
              "torch": "2.13.0+cpu", "cpu": "test cpu", "paths": {"nncf-int8": {"miou_change": 0.0031, "goal": 0.005, "pass": True},
                                                                      "torch-bf16": {"miou_change": 0.0042, "goal": 0.002, "pass": False}}}
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{**record, "weights": "camvid-v2"}, {**record, "weights": "camvid", "miou_fp32": 0.6625}]))
    written = load_script(ROOT / "tools" / "publish_zoo.py").record_deployment(results, index_path=index, tag="camvid-v2")
    assert "deployment" not in written["fplnet"]  # the first round's records stay as they were
    v2 = written["fplnet@camvid-v2"]["deployment"]
    assert v2["openvino-int8"]["pass"] is True and v2["torch-bf16"]["pass"] is False
    assert "0.6851" in v2["openvino-int8"]["measured"] and "test cpu" in v2["openvino-int8"]["measured"]
    assert json.loads(index.read_text()) == written


def test_set_default_moves_the_mark_within_one_model_and_refuses_unpublished_tags(tmp_path):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"essnet-b-dg2": {"tag": "camvid"}, "essnet-b-dg2@camvid-v4": {"tag": "camvid-v4"},
                                 "essnet-b-dg2@camvid-v5": {"tag": "camvid-v5", "default": True},
                                 "fplnet@camvid-v5": {"tag": "camvid-v5", "default": True}}))
    tool = load_script(ROOT / "tools" / "publish_zoo.py")
    written = tool.set_default("essnet-b-dg2@camvid-v4", index_path=index)
    assert [k for k, v in written.items() if v.get("default")] == ["essnet-b-dg2@camvid-v4", "fplnet@camvid-v5"]
    assert json.loads(index.read_text()) == written
    assert tool.set_default("essnet-b-dg2@camvid", index_path=index)["essnet-b-dg2"]["default"] is True  # the first round's key
    with pytest.raises(SystemExit, match="essnet-b-dg2@camvid-v9: not in index.json; published for essnet-b-dg2: "
                                         "essnet-b-dg2@camvid, essnet-b-dg2@camvid-v4, essnet-b-dg2@camvid-v5"):
        tool.set_default("essnet-b-dg2@camvid-v9", index_path=index)


def test_card_note_says_which_batchnorm_statistics_an_averaged_round_ships():
    from types import SimpleNamespace
    notes = load_script(ROOT / "tools" / "publish_zoo.py").run_notes

    def card(train):
        return SimpleNamespace(training=SimpleNamespace(start_weights="wspdnet/camvid (sha256 ab)", teacher=None,
                                                        config={"train": train}))

    reestimated = notes(card({"ema": 0.995, "ema_bn": "reestimate", "ema_bn_batches": 20}))
    assert "moving average of the trained ones (train.ema 0.995)" in reestimated
    assert "BatchNorm statistics re-estimated from 20 training batches" in reestimated
    copied = notes(card({"ema": 0.995, "ema_bn": "copy"}))  # the rounds from before train.ema_bn
    assert "train.ema 0.995" in copied and "BatchNorm" not in copied
    assert "moving average" not in notes(card({"ema": None}))
