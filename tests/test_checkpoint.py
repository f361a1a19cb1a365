import os

import pytest
import torch

import rtseg
from rtseg.io import CheckpointError, atomic_save, load_checkpoint, load_file, save_checkpoint
from rtseg.registry import model_from_checkpoint


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_atomic_save_keeps_previous_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"epoch": torch.tensor(1)}, path)
    with pytest.raises(Exception):
        atomic_save({"epoch": _Unpicklable()}, path)
    assert load_file(path)["epoch"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "temporary file left behind"


def test_truncated_checkpoint_is_a_clear_error_naming_the_file(tmp_path):
    model = rtseg.create_model("espnet-c", num_classes=3)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, epoch=0)
    data = path.read_bytes()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_checkpoint(broken)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(100))
    with pytest.raises(CheckpointError, match="garbage.pt"):
        model_from_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path):
    model = rtseg.create_model("espnet-c", num_classes=3, q=2).eval()
    path = save_checkpoint(tmp_path / "ckpt.pt", model, epoch=4)
    assert load_checkpoint(path)["epoch"] == 4
    rebuilt = model_from_checkpoint(path).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model(x), rebuilt(x))


def test_plain_state_dict_is_not_taken_for_a_checkpoint(tmp_path):
    path = tmp_path / "sd.pth"
    torch.save(rtseg.create_model("espnet-c").state_dict(), path)
    with pytest.raises(CheckpointError, match="not an rtseg checkpoint"):
        load_checkpoint(path)
