"""Weights download and cache (file:// URLs only; nothing leaves the machine)."""
import hashlib

import pytest

from rtseg import hub


def make_file(tmp_path, name="weights.pth", payload=b"rtseg test weights " * 1000):
    path = tmp_path / "remote" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(payload)
    return path, hashlib.sha256(payload).hexdigest()


def test_download_once_then_reuse_the_cache(tmp_path):
    source, digest = make_file(tmp_path)
    cache = tmp_path / "cache"
    first = hub.download(source.as_uri(), sha256=digest, cache=cache, progress=False)
    assert first == cache / "weights.pth" and first.read_bytes() == source.read_bytes()
    source.unlink()  # a second call must not need the source any more
    assert hub.download(source.as_uri(), sha256=digest, cache=cache, progress=False) == first


def test_wrong_checksum_raises_and_caches_nothing(tmp_path):
    source, digest = make_file(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(hub.ChecksumError, match=digest):
        hub.download(source.as_uri(), sha256="0" * 64, cache=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_hash_prefix_in_the_file_name_is_checked_like_torch_hub(tmp_path):
    payload = b"abc" * 100
    good_prefix = hashlib.sha256(payload).hexdigest()[:8]
    good, _ = make_file(tmp_path, f"net-{good_prefix}.pth", payload)
    assert hub.download(good.as_uri(), cache=tmp_path / "c1", progress=False).is_file()
    bad, _ = make_file(tmp_path, "net-deadbeef.pth", payload)
    with pytest.raises(hub.ChecksumError):
        hub.download(bad.as_uri(), cache=tmp_path / "c2", progress=False)


def test_damaged_cached_copy_is_fetched_again(tmp_path):
    source, digest = make_file(tmp_path)
    cache = tmp_path / "cache"
    cached = hub.download(source.as_uri(), sha256=digest, cache=cache, progress=False)
    cached.write_bytes(b"truncated")
    assert hub.download(source.as_uri(), sha256=digest, cache=cache, progress=False).read_bytes() == source.read_bytes()


def test_resolve_local_paths_and_urls(tmp_path, monkeypatch):
    source, digest = make_file(tmp_path)
    assert hub.resolve_weights(source) == source
    with pytest.raises(hub.ChecksumError):
        hub.resolve_weights(source, sha256="1" * 64)
    with pytest.raises(FileNotFoundError, match="neither an existing file nor a URL"):
        hub.resolve_weights(tmp_path / "missing.pth")
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "env-cache"))
    assert hub.cache_dir() == tmp_path / "env-cache" / "weights"  # one cache folder: weights beside the dataset caches
    assert hub.resolve_weights(source.as_uri(), progress=False).parent == tmp_path / "env-cache" / "weights"
