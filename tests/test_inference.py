import numpy as np
import torch

import rtseg
from rtseg.inference import parse_size, predict_logits


def test_predict_returns_label_map_at_image_size_with_model_normalisation():
    model = rtseg.create_model("espnet-c", num_classes=5).eval()
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    out = rtseg.predict(model, image)
    assert out.shape == (37, 53) and out.dtype == np.uint8 and out.max() < 5
    # espnet-c's preset is ESPNet's own (BGR): flipping the channels must change the result's logits
    a = predict_logits(model, image)
    b = predict_logits(model, image, normalization="imagenet")
    assert not torch.allclose(a, b)
    assert rtseg.predict(model, image, size=(64, 64)).shape == (37, 53)


def test_parse_size():
    assert parse_size("512x1024") == (512, 1024)
    for bad in ("512", "0x3", "axb"):
        try:
            parse_size(bad)
        except ValueError as exc:
            assert bad in str(exc)
        else:
            raise AssertionError(bad)


def _trained_on_shrunk_images(model, scale):
    """``model`` with a card saying its weights were trained on images shrunk by ``scale`` (data.input_scale)."""
    from rtseg.card import TrainingRecord, card_of

    model.rtseg_card = card_of(model).replace(training=TrainingRecord(dataset="camvid", config={"data": {"input_scale": scale}}))
    return model


def test_card_input_scale_comes_from_the_training_config():
    from rtseg.card import card_of

    model = rtseg.create_model("espnet-c", num_classes=5)
    assert card_of(model).input_scale == 1 and card_of(model).network_input_size((360, 480)) is None
    card = card_of(_trained_on_shrunk_images(model, 2))
    assert card.input_scale == 2 and card.network_input_size((360, 481)) == (180, 240)
    assert card_of(_trained_on_shrunk_images(model, "2")).input_scale == 1  # only a valid config value counts


def test_predict_feeds_weights_trained_on_shrunk_images_the_shrunk_image():
    from rtseg.data.transforms import resize_image

    model = _trained_on_shrunk_images(rtseg.create_model("espnet-c", num_classes=5).eval(), 2)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    image = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    labels = rtseg.predict(model, image)
    assert seen == [(30, 40)] and labels.shape == (60, 80)
    # the shrink is the training pipeline's (PIL bilinear on the uint8 image), not an interpolation of the tensor
    from rtseg.card import card_of
    from rtseg.evaluation import resize_to

    with torch.no_grad():
        expected = resize_to(model(card_of(model).normalization(resize_image(image, (30, 40)))[None]), (60, 80))[0]
    assert torch.allclose(predict_logits(model, image), expected, atol=1e-6)
    rtseg.predict(model, image, size=(48, 64))  # an explicit size is the caller's choice
    assert seen[-1] == (48, 64)


def test_onnx_segmenter_feeds_weights_trained_on_shrunk_images_the_shrunk_image(tmp_path):
    import pytest

    pytest.importorskip("onnxruntime")
    from rtseg.deploy.onnx_export import export_onnx
    from rtseg.deploy.ort import OnnxSegmenter

    model = _trained_on_shrunk_images(rtseg.create_model("espnet-c", num_classes=5).eval(), 2)
    export_onnx(model, tmp_path / "m.onnx", (32, 48), dynamic=True)
    image = np.random.default_rng(2).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    onnx_labels = OnnxSegmenter(tmp_path / "m.onnx", threads=1).predict(image)
    torch_labels = rtseg.predict(model, image)
    assert onnx_labels.shape == (64, 96)
    assert (onnx_labels == torch_labels).mean() > 0.99
