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
from typing import Callable

from rtseg.errors import UserError

__all__ = ["ChecksumError", "DownloadError", "cache_dir", "sha256_of", "download", "resolve_weights", "is_url", "cached_name", "local_file_url"]

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


def local_file_url(url: str) -> Path | None:
    """The local path a ``file://`` URL names (None for any other URL)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file":
        return None
    if parsed.netloc not in ("", "localhost"):
        raise DownloadError(url, Path(parsed.path), f"a file:// URL names a file on this machine, not on {parsed.netloc!r}")
    return Path(urllib.parse.unquote(parsed.path))


def cached_name(url: str) -> str:
    """The cache file name of a URL that no table names: its file name with a digest of the whole URL, so two URLs
    ending in the same file name (``.../a/w.safetensors``, ``.../b/w.safetensors``) never share a cached copy."""
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name:
        raise ValueError(f"cannot tell a file name from the URL {url!r}")
    stem, dot, suffix = name.rpartition(".")
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return f"{stem}.url_{key}.{suffix}" if dot and stem else f"{name}.url_{key}"


def download(url: str, *, sha256: str | None = None, cache: str | os.PathLike | None = None, progress: bool = True,
             filename: str | None = None, validate: Callable[[Path], None] | None = None) -> Path:
    """The local copy of ``url``, downloading it into the cache first if needed.

    - A ``file://`` URL is the local file itself: never copied into the cache, checked against ``sha256`` if given.
    - Otherwise the copy is stored as ``filename`` (a registered entry's name, which holds its SHA-256), under the
      URL's file name when ``sha256`` or a torch.hub hash suffix pins the content, else under :func:`cached_name`
      (keyed by the whole URL). A download lands in a temporary file, is checked (its SHA-256,
      then ``validate``, which raises on content that is no weights file) and only then renamed into place, so
      the cache never holds a file that failed a check. A cached copy whose digest does not match is fetched again.
    """
    import torch.hub

    local = local_file_url(url)
    if local is not None:
        if not local.is_file():
            raise FileNotFoundError(f"{url}: {local} {'is not a regular file' if local.exists() else 'does not exist'}")
        expected = _expected_hash(local.name, sha256)
        if expected:
            _check(sha256_of(local), expected, str(local))
        if validate is not None:
            validate(local)
        return local
    # torch.hub's convention: a hex prefix at the end of the URL's file name is the SHA-256 it must start with
    basename = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    expected = _expected_hash(filename or basename, sha256)
    # content pinned by a SHA-256 may keep its own name (a copy under it is checked before use); anything else is keyed
    # by the whole URL, so two URLs that end in the same file name never share a cached copy
    filename = filename or (basename if expected and basename else cached_name(url))
    folder = Path(cache) if cache is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    if target.is_file():
        if expected is None:
            return target
        try:
            _check(sha256_of(target), expected, f"cached {target}")
            return target
        except ChecksumError:
            target.unlink()  # a stale or damaged copy: fetch it again
    partial = folder / f".{filename}.{os.getpid()}.partial"
    try:
        torch.hub.download_url_to_file(url, str(partial), hash_prefix=expected, progress=progress)
        if validate is not None:
            validate(partial)
        os.replace(partial, target)
    except RuntimeError as exc:
        if "invalid hash value" in str(exc):
            got = str(exc).rsplit('got "', 1)[-1].rstrip('")')
            raise ChecksumError(f"download of {url}: SHA-256 {got} does not match the expected {expected}") from None
        raise
    except OSError as exc:  # URLError (no network, DNS, proxy), a refused connection, a timeout
        if isinstance(exc, UserError):
            raise
        raise DownloadError(url, target, getattr(exc, "reason", None) or exc) from exc
    finally:
        partial.unlink(missing_ok=True)
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
