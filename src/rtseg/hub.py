"""Pretrained weights from a local path or a URL: download once into a cache folder, with a progress bar and a checksum.

Works like ``torch.hub``: a URL's file is stored under :func:`cache_dir` by its file name and reused on
later calls. The expected SHA-256 is either passed explicitly or, torch.hub style, taken from a hex
prefix at the end of the file name (``resnet18-f37072fd.pth``). A file whose digest does not match is
deleted and never lands in the cache.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

__all__ = ["ChecksumError", "cache_dir", "sha256_of", "download", "resolve_weights", "is_url"]

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """Downloaded (or cached) bytes whose SHA-256 is not the expected one."""


def cache_dir() -> Path:
    """``$RTSEG_CACHE`` if set, else ``$XDG_CACHE_HOME/rtseg/weights`` (``~/.cache/rtseg/weights``)."""
    env = os.environ.get("RTSEG_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rtseg" / "weights"


def is_url(source: str | os.PathLike) -> bool:
    return urllib.parse.urlparse(str(source)).scheme in ("http", "https", "file", "ftp")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_hash(filename: str, sha256: str | None) -> str | None:
    if sha256:
        return sha256.lower()
    m = _HASH_IN_NAME.search(filename)
    return m.group(1) if m else None


def _check(digest: str, expected: str | None, what: str) -> None:
    if expected and not digest.startswith(expected):
        raise ChecksumError(f"{what}: SHA-256 {digest} does not match the expected {expected}")


def download(url: str, *, sha256: str | None = None, cache: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The cached copy of ``url``, downloading it first if needed (to a temporary file, renamed when verified)."""
    filename = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not filename:
        raise ValueError(f"cannot tell a file name from the URL {url!r}")
    folder = Path(cache) if cache is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    expected = _expected_hash(filename, sha256)
    if target.is_file():
        if expected is None:
            return target
        try:
            _check(sha256_of(target), expected, f"cached {target}")
            return target
        except ChecksumError:
            target.unlink()  # a stale or damaged copy: fetch it again
    from tqdm import tqdm

    fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url) as response, os.fdopen(fd, "wb") as out:
            length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
            total = int(length) if length and str(length).isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=filename, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        _check(digest.hexdigest(), expected, f"download of {url}")
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def resolve_weights(
    source: str | os.PathLike, *, sha256: str | None = None, cache: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """A local file for ``source``: an existing path (checked against ``sha256`` if given) or a downloaded URL."""
    if is_url(source):
        return download(str(source), sha256=sha256, cache=cache, progress=progress)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights {str(source)!r} are neither an existing file nor a URL (http://, https://, file://)")
    if sha256:
        _check(sha256_of(path), sha256.lower(), str(path))
    return path
