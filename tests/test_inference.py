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
