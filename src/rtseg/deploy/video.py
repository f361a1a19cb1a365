"""Segment videos and image sequences frame by frame into an overlay video (OpenCV for decoding and encoding).

Decoding runs in a background thread that keeps a few frames ready, so reading the next frame overlaps
with inference on the current one; the reported FPS is end to end: frames written divided by the wall
time from opening the stream to closing the output (decode, pre-process, inference, post-process, encode).
"""
from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from rtseg.errors import UserError

__all__ = ["VIDEO_SUFFIXES", "is_stream", "predict_video", "VideoError", "read_frames"]

MIN_SIDE = 2  # OpenCV's mp4v encoder refuses 1-pixel frames
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class VideoError(UserError, ValueError):
    """A video or image sequence cannot be read or written."""


def _cv2():
    try:
        import cv2
    except ImportError:
        raise VideoError("video input needs OpenCV; install rtseg with the 'video' extra: pip install 'rtseg[video]'") from None
    return cv2


def is_stream(item: str | Path) -> bool:
    """A video file, or an OpenCV image-sequence pattern such as ``frames/%05d.png``."""
    s = str(item)
    return Path(s).suffix.lower() in VIDEO_SUFFIXES or ("%" in Path(s).name and "d" in Path(s).name)


def _open(source: str | Path, frames: list[Path] | None):
    cv2 = _cv2()
    if frames is not None:
        return None, 0.0
    if "%" not in str(source) and not Path(source).is_file():
        raise VideoError(f"{source}: no such video file")
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise VideoError(f"{source}: OpenCV cannot open it as a video or image sequence (unsupported codec or container, or not a video)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    return cap, fps


def read_frames(source: str | Path, frames: list[Path] | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video / pattern, or of the listed image files in order."""
    cv2 = _cv2()
    if frames is not None:
        for f in frames:
            bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if bgr is None:
                raise VideoError(f"{f}: OpenCV cannot read this image")
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return
    cap, _ = _open(source, None)
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def _prefetch(it: Iterator[np.ndarray], depth: int = 4) -> Iterator[np.ndarray]:
    """Iterate ``it`` in a background thread, ``depth`` items ahead; errors are re-raised in the caller."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker():
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def predict_video(
    segment: Callable[[np.ndarray], np.ndarray],
    source: str | Path,
    out_path: str | Path,
    palette,
    alpha: float = 0.5,
    frames: list[Path] | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    decorate: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Write the overlay video of ``source`` (or of the image files ``frames``) to ``out_path``.

    ``segment`` maps an RGB frame to its label map; ``decorate(overlay, labels)`` (a legend, say) finishes each frame.
    Returns frames, wall seconds, end-to-end FPS and the output path.
    """
    cv2 = _cv2()
    from rtseg.inference import overlay

    start = time.perf_counter()
    cap, stream_fps = _open(source, frames)
    if cap is not None:
        cap.release()
    out_fps = fps or stream_fps or 25.0
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # written under a temporary name (same suffix: OpenCV picks the container by it) and renamed when complete, so an
    # interrupted or failed run never leaves a file that looks finished
    partial = out_path.with_name(f".{out_path.stem}.partial{out_path.suffix}")
    writer = None
    n = 0
    infer_s = 0.0
    complete = False
    try:
        for rgb in _prefetch(read_frames(source, frames)):
            if writer is None:
                h, w = rgb.shape[:2]
                if min(h, w) < MIN_SIDE:
                    raise VideoError(f"{source}: the first frame is {w}x{h}; a video needs frames of at least {MIN_SIDE}x{MIN_SIDE} pixels")
                writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), out_fps, (w, h))
                if not writer.isOpened():
                    raise VideoError(f"{out_path}: OpenCV cannot write an mp4v video here")
            elif rgb.shape[:2] != (h, w):
                raise VideoError(f"{source}: frame {n} is {rgb.shape[1]}x{rgb.shape[0]}, the first frame was {w}x{h}; a video needs one size")
            t0 = time.perf_counter()
            labels = segment(rgb)
            infer_s += time.perf_counter() - t0
            blended = overlay(rgb, labels, palette, alpha)
            writer.write(cv2.cvtColor(decorate(blended, labels) if decorate else blended, cv2.COLOR_RGB2BGR))
            n += 1
            if max_frames and n >= max_frames:
                break
        complete = n > 0
    finally:
        if writer is not None:
            writer.release()
        if complete:
            os.replace(partial, out_path)
        else:
            partial.unlink(missing_ok=True)
    if n == 0:
        raise VideoError(f"{source}: no frame could be decoded (empty or unreadable stream)")
    wall = time.perf_counter() - start
    return {"source": str(source), "output": str(out_path), "frames": n, "seconds": wall, "fps_end_to_end": n / wall,
            "segment_seconds": infer_s, "fps_segment_only": n / infer_s if infer_s else float("inf")}
