"""Video prediction: a short video written by the test goes in, an overlay video with every frame comes out."""
import numpy as np
import pytest

from rtseg.cli import main

cv2 = pytest.importorskip("cv2")


def write_video(path, frames=5, size=(64, 96)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size[1], size[0]))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.zeros((*size, 3), np.uint8)
        frame[:, : (i + 1) * 10] = (40 * i, 255, 0)
        writer.write(frame)
    writer.release()


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    w, h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    cap.release()
    return n, (int(h), int(w))


def test_video_in_overlay_video_out(tmp_path, capsys):
    src = tmp_path / "clip.mp4"
    write_video(src)
    assert main(["predict", "espnet-c", str(src), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "5 frames" in out and "FPS end to end" in out
    assert count_frames(tmp_path / "out" / "clip_overlay.mp4") == (5, (64, 96))


def test_image_sequence_pattern_and_folder_as_video(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:04d}.png"), np.full((48, 64, 3), 50 * i, np.uint8))
    assert main(["predict", "espnet-c", str(frames / "%04d.png"), "--out", str(tmp_path / "a")]) == 0
    assert count_frames(tmp_path / "a" / "frames_overlay.mp4")[0] == 3
    assert main(["predict", "espnet-c", str(frames), "--as-video", "--out", str(tmp_path / "b")]) == 0
    assert count_frames(tmp_path / "b" / "frames_overlay.mp4") == (3, (48, 64))


def test_unreadable_stream_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    assert main(["predict", "espnet-c", str(bad), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "cannot open it as a video" in err
    assert main(["predict", "espnet-c", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "out")]) == 1
    assert "no such video file" in capsys.readouterr().err
