"""Outputs: writability checked before work; a full or read-only disk is a user error and loses nothing."""
import errno
import os
from pathlib import Path

import pytest
import torch

from rtseg.io import files as checkpoint
from rtseg.errors import UserError
from rtseg.storage import OutputError, WriteError, atomic_write_text, check_writable, reraise_write_error


def _read_only_folder(tmp_path) -> Path:
    """A folder this process cannot write: chmod for normal users; root ignores permissions, so /sys (sysfs refuses new files)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        return folder
    folder = Path("/sys/kernel")
    if not folder.is_dir() or os.access(folder, os.W_OK) and _can_create(folder):
        pytest.skip("running as root with no folder that refuses writes (chmod does not bind root)")
    return folder


def _can_create(folder: Path) -> bool:
    try:
        (folder / ".rtseg-probe").touch()
    except OSError:
        return False
    (folder / ".rtseg-probe").unlink()
    return True


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_checkpoint_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    checkpoint.atomic_save({"epoch": 1}, target)
    before = target.read_bytes()

    def partial_then_full(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        _disk_full()

    monkeypatch.setattr(torch, "save", partial_then_full)
    with pytest.raises(WriteError) as info:
        checkpoint.atomic_save({"epoch": 2}, target)
    message = str(info.value)
    assert "disk full" in message and str(target) in message and "previous file is intact" in message
    assert isinstance(info.value, UserError) and isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left


def test_disk_full_on_a_first_write_says_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", _disk_full)
    with pytest.raises(WriteError, match="no partial file was left"):
        checkpoint.atomic_save({}, tmp_path / "best.pt")
    assert list(tmp_path.iterdir()) == []


def test_other_errors_pass_through(tmp_path):
    reraise_write_error(ValueError("x"), tmp_path / "a")  # returns: not a disk error
    reraise_write_error(OSError(errno.EIO, "io"), tmp_path / "a")
    with pytest.raises(WriteError, match="read-only file system"):
        reraise_write_error(OSError(errno.EROFS, "ro"), tmp_path / "a")


def test_atomic_write_text_disk_full(tmp_path, monkeypatch):
    target = atomic_write_text(tmp_path / "summary.json", "{}")
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(WriteError, match="summary.json"):
        atomic_write_text(target, '{"a": 1}')
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_writable_paths_pass_and_leave_nothing(tmp_path):
    assert check_writable(tmp_path / "new" / "deeper", kind="dir") == tmp_path / "new" / "deeper"
    check_writable(tmp_path / "out.onnx")
    (tmp_path / "exists.onnx").write_text("x")
    check_writable(tmp_path / "exists.onnx", overwrite=True)
    check_writable(tmp_path, kind="dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.onnx"]


def test_parent_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    for kind in ("file", "dir"):
        with pytest.raises(OutputError, match=r"f'? is a file"):
            check_writable(tmp_path / "f" / "sub" / "out.png", kind=kind)


def test_existing_file_where_folder_needed_and_back(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="existing file; a folder is needed"):
        check_writable(tmp_path / "f", kind="dir")
    with pytest.raises(OutputError, match="existing folder; a file name is needed"):
        check_writable(tmp_path, kind="file")


def test_existing_file_without_overwrite(tmp_path):
    (tmp_path / "model.onnx").write_text("old")
    with pytest.raises(OutputError, match="--out .*model.onnx.* already exists.*--overwrite"):
        check_writable(tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").read_text() == "old"


def test_option_name_is_used(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="--report"):
        check_writable(tmp_path / "f", kind="dir", option="--report")


def test_read_only_folder(tmp_path):
    folder = _read_only_folder(tmp_path)
    try:
        with pytest.raises(OutputError, match="not writable") as info:
            check_writable(folder / "run", kind="dir")
        assert str(folder) in str(info.value) and isinstance(info.value, UserError)
        with pytest.raises(OutputError, match="not writable"):
            check_writable(folder / "out.png")
    finally:
        if folder.is_relative_to(tmp_path):
            folder.chmod(0o700)
