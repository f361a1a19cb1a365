"""Weights from a local path or a URL: downloaded once with ``torch.hub.download_url_to_file`` into rtseg's
cache folder (``$RTSEG_CACHE/weights``, see :func:`rtseg.data.cache.default_cache_dir`), checked by SHA-256.

The expected SHA-256 is either passed explicitly or, torch.hub style, taken from a hex prefix at the end of
the file name (``resnet18-f37072fd.pth``). A download whose digest does not match never lands in the cache.
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from pathlib import Path

from rtseg.errors import UserError

__all__ = ["ChecksumError", "DownloadError", "cache_dir", "sha256_of", "download", "resolve_weights", "is_url"]

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")
_CHUNK = 1 << 20


class ChecksumError(UserError, ValueError):
    """Downloaded (or cached) bytes whose SHA-256 is not the expected one."""


class DownloadError(UserError, OSError):
    """A file that could not be fetched (no network, a proxy, a dead link); names the URL and where to place it."""

    def __init__(self, url: str, target: Path, reason: object, hint: str = ""):
        self.url, self.target, self.reason = url, target, reason
        super().__init__(f"cannot download {url} ({reason}); without network, fetch that file elsewhere and place it at "
                         f"{target} (the cache folder; $RTSEG_CACHE moves it), then run again{hint}")


def cache_dir() -> Path:
    """Where downloaded weights are kept: the ``weights`` folder of rtseg's one cache folder."""
    from rtseg.data.cache import default_cache_dir

    return default_cache_dir() / "weights"


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


def download(url: str, *, sha256: str | None = None, cache: str | os.PathLike | None = None, progress: bool = True,
             filename: str | None = None) -> Path:
    """The cached copy of ``url`` (stored as ``filename``, default the URL's file name), downloading it first if needed.

    A cached copy whose digest does not match is fetched again; a download whose digest does not match raises
    :class:`ChecksumError` and leaves nothing behind.
    """
    import torch.hub

    filename = filename or os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
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
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=expected, progress=progress)
    except RuntimeError as exc:
        if "invalid hash value" in str(exc):
            got = str(exc).rsplit('got "', 1)[-1].rstrip('")')
            raise ChecksumError(f"download of {url}: SHA-256 {got} does not match the expected {expected}") from None
        raise
    except OSError as exc:  # URLError (no network, DNS, proxy), a refused connection, a timeout
        target.unlink(missing_ok=True)
        raise DownloadError(url, target, getattr(exc, "reason", None) or exc) from exc
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
