"""Every registered model keeps its state-dict keys and shapes: official weights, torchvision-keyed backbones and
checkpoints of runs in progress must keep loading strictly. tests/data/state_dict_keys.json holds, per model, the
SHA-256 of its sorted ``key shape`` lines at 19 classes, written before the models were refactored."""
import hashlib
import json
from pathlib import Path

import pytest
import torch

import rtseg

FILE = Path(__file__).parent / "data" / "state_dict_keys.json"


# Option values that change which blocks are built, beyond the registered defaults.
EXTRA = {
    "liteseg-mobilenetv2 head=aspp": ("liteseg-mobilenetv2", {"head": "aspp"}),
    "liteseg-darknet19 conv=standard": ("liteseg-darknet19", {"conv": "standard"}),
    "farseenet subpixel_layout=head": ("farseenet", {"subpixel_layout": "head"}),
    "essnet-d upsampling_mode=bilinear": ("essnet-d", {"upsampling_mode": "bilinear"}),
    "fplnet decoder_kernels=(4, 3, 3)": ("fplnet", {"decoder_kernels": (4, 3, 3)}),
    "fplnet module=esp": ("fplnet", {"module": "esp"}),
}


def key_digest(label: str) -> str:
    name, options = EXTRA.get(label, (label, {}))
    with torch.device("meta"):  # keys and shapes only, no memory for weights
        model = rtseg.create_model(name, num_classes=19, **options)
    lines = sorted(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


RECORDED = json.loads(FILE.read_text())


def test_every_registered_model_has_a_recorded_digest():
    assert sorted(RECORDED) == sorted(rtseg.list_models() + list(EXTRA))


@pytest.mark.parametrize("label", sorted(RECORDED))
def test_state_dict_keys_and_shapes_are_unchanged(label):
    assert key_digest(label) == RECORDED[label], f"{label}: state-dict keys or shapes changed"


if __name__ == "__main__":  # regenerate only when a change of keys is intended (it breaks existing weight files)
    FILE.write_text(json.dumps({n: key_digest(n) for n in rtseg.list_models() + list(EXTRA)}, indent=1, sort_keys=True) + "\n")
