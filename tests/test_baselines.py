"""ERFNet and ESPNet against the facts of their official releases."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import rtseg
from conftest import shared_path
from rtseg.data import get_normalization, label_ids_to_train_ids
from rtseg.metrics import ConfusionMatrix


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_erfnet_matches_official_parameter_count_and_structure():
    model = rtseg.create_model("erfnet", num_classes=19)
    assert n_params(model) == 2_064_191
    enc = model.encoder
    assert enc.initial_block.conv.weight.shape == (13, 3, 3, 3) and enc.initial_block.conv.bias is not None
    assert enc.initial_block.bn.eps == 1e-3
    dilations = [layer.conv3x1_2.dilation[0] for layer in enc.layers if hasattr(layer, "conv3x1_2")]
    assert dilations == [1] * 5 + [2, 4, 8, 16] * 2
    drop = [layer.dropout.p for layer in enc.layers if hasattr(layer, "dropout")]
    assert drop == pytest.approx([0.03] * 5 + [0.3] * 8)
    assert model.decoder.output_conv.weight.shape == (16, 19, 2, 2)


def test_erfnet_encoder_head_is_1x1_and_upsampled():
    model = rtseg.create_model("erfnet-encoder", num_classes=19).eval()
    assert model.encoder.output_conv.weight.shape == (19, 128, 1, 1)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 19, 64, 64)


def test_espnet_parameter_count_at_20_classes_matches_release():
    assert n_params(rtseg.create_model("espnet", num_classes=20)) == 364_569


@pytest.mark.parametrize(
    "model_name,file,classes,options",
    [
        ("espnet", "decoder_espnet_p_2_q_8.pth", 20, {}),
        ("espnet", "decoder_espnet_p_2_q_8_camvid.pth", 12, {"decoder_skip": "level1-image"}),
        ("espnet-c", "encoder_espnet_p_2_q_8.pth", 20, {}),
    ],
)
def test_official_espnet_weights_load_strictly(model_name, file, classes, options):
    path = shared_path("weights", "espnet", file)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = rtseg.create_model(model_name, num_classes=classes, weights=str(path), **options)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in raw.items())


# Scores of the official ESPNet code with the official weights on the two frames (shared/README.md).
REFERENCE = {"000294": (0.748, 0.403), "000576": (0.867, 0.542)}


@pytest.fixture(scope="module")
def official_espnet():
    path = shared_path("weights", "espnet", "decoder_espnet_p_2_q_8.pth")
    return rtseg.create_model("espnet", num_classes=20, weights=str(path)).eval()


@pytest.mark.parametrize("frame", sorted(REFERENCE))
def test_official_espnet_scores_what_the_official_code_scores(official_espnet, frame):
    root = shared_path("data", "cityscapes-mini")
    stem = f"frankfurt/frankfurt_000000_{frame}"
    image = np.asarray(Image.open(root / "leftImg8bit" / "val" / f"{stem}_leftImg8bit.png").convert("RGB"))
    label = label_ids_to_train_ids(np.asarray(Image.open(root / "gtFine" / "val" / f"{stem}_gtFine_labelIds.png")))
    # the official test script: BGR, 0-255 mean/std, resize to 1024x512, /255; argmax upsampled (nearest)
    x = F.interpolate(get_normalization("espnet")(image)[None], size=(512, 1024), mode="bilinear", align_corners=False)
    with torch.inference_mode():
        pred = official_espnet(x).argmax(1, keepdim=True).float()
    pred = F.interpolate(pred, size=label.shape, mode="nearest")[0, 0].long()
    cm = ConfusionMatrix(19)  # predicted void (class 19) counts as wrong
    cm.update(pred, torch.from_numpy(label.astype(np.int64)))
    acc, miou = REFERENCE[frame]
    assert cm.pixel_accuracy() == pytest.approx(acc, abs=0.01)
    assert cm.mean_iou("present") == pytest.approx(miou, abs=0.01)
