"""Weights download and cache: real downloads from a loopback HTTP server (tests/conftest.py: http_files) and file://
URLs, which name local files and are never copied into the cache; nothing leaves the machine."""
import hashlib

import pytest

from rtseg import hub


def make_file(folder, name="weights.pth", payload=b"rtseg test weights " * 1000):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path, hashlib.sha256(payload).hexdigest()


def test_download_once_then_reuse_the_cache(http_files, tmp_path):
    served, base, requests = http_files
    source, digest = make_file(served)
    cache = tmp_path / "cache"
    first = hub.download(f"{base}/weights.pth", sha256=digest, cache=cache, progress=False)
    assert first.parent == cache and first.read_bytes() == source.read_bytes()
    source.unlink()  # a second call must not need the source any more
    assert hub.download(f"{base}/weights.pth", sha256=digest, cache=cache, progress=False) == first
    assert requests == ["/weights.pth"]


def test_two_urls_with_the_same_file_name_never_share_a_cached_copy(http_files, tmp_path):
    served, base, _ = http_files
    make_file(served / "a", "w.safetensors", b"first file")
    make_file(served / "b", "w.safetensors", b"second file")
    cache = tmp_path / "cache"
    a = hub.download(f"{base}/a/w.safetensors", cache=cache, progress=False)
    b = hub.download(f"{base}/b/w.safetensors", cache=cache, progress=False)
    assert a != b and a.read_bytes() == b"first file" and b.read_bytes() == b"second file"
    assert a.suffix == b.suffix == ".safetensors"


def test_wrong_checksum_raises_and_caches_nothing(http_files, tmp_path):
    served, base, _ = http_files
    source, digest = make_file(served)
    cache = tmp_path / "cache"
    with pytest.raises(hub.ChecksumError, match=digest):
        hub.download(f"{base}/weights.pth", sha256="0" * 64, cache=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_content_that_fails_validation_is_not_cached(http_files, tmp_path):
    served, base, _ = http_files
    make_file(served, "passwd", b"root:x:0:0:root:/root:/bin/bash\n")
    cache = tmp_path / "cache"

    def refuse(path):
        raise ValueError(f"{path.name} is no weights file")

    with pytest.raises(ValueError, match="no weights file"):
        hub.download(f"{base}/passwd", cache=cache, progress=False, validate=refuse)
    assert list(cache.iterdir()) == []


def test_hash_prefix_in_the_file_name_is_checked_like_torch_hub(http_files, tmp_path):
    served, base, _ = http_files
    payload = b"abc" * 100
    good_prefix = hashlib.sha256(payload).hexdigest()[:8]
    make_file(served, f"net-{good_prefix}.pth", payload)
    assert hub.download(f"{base}/net-{good_prefix}.pth", filename=f"net-{good_prefix}.pth", cache=tmp_path / "c1", progress=False).is_file()
    make_file(served, "net-deadbeef.pth", payload)
    with pytest.raises(hub.ChecksumError):
        hub.download(f"{base}/net-deadbeef.pth", filename="net-deadbeef.pth", cache=tmp_path / "c2", progress=False)


def test_damaged_cached_copy_is_fetched_again(http_files, tmp_path):
    served, base, _ = http_files
    source, digest = make_file(served)
    cache = tmp_path / "cache"
    cached = hub.download(f"{base}/weights.pth", sha256=digest, cache=cache, progress=False)
    cached.write_bytes(b"truncated")
    assert hub.download(f"{base}/weights.pth", sha256=digest, cache=cache, progress=False).read_bytes() == source.read_bytes()


def test_file_urls_are_the_local_file_never_a_cached_copy(tmp_path):
    source, digest = make_file(tmp_path / "local")
    cache = tmp_path / "cache"
    assert hub.download(source.as_uri(), sha256=digest, cache=cache, progress=False) == source
    assert not cache.exists()
    with pytest.raises(hub.ChecksumError):
        hub.download(source.as_uri(), sha256="1" * 64, cache=cache, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hub.download((tmp_path / "gone.pth").as_uri(), cache=cache, progress=False)
    with pytest.raises(FileNotFoundError, match="not a regular file"):
        hub.download(tmp_path.as_uri(), cache=cache, progress=False)


def test_resolve_local_paths_and_urls(http_files, tmp_path, monkeypatch):
    served, base, _ = http_files
    source, digest = make_file(served)
    assert hub.resolve_weights(source) == source
    with pytest.raises(hub.ChecksumError):
        hub.resolve_weights(source, sha256="1" * 64)
    with pytest.raises(FileNotFoundError, match="neither an existing file nor a URL"):
        hub.resolve_weights(tmp_path / "missing.pth")
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "env-cache"))
    assert hub.cache_dir() == tmp_path / "env-cache" / "weights"  # one cache folder: weights beside the dataset caches
    assert hub.resolve_weights(f"{base}/weights.pth", progress=False).parent == tmp_path / "env-cache" / "weights"
    assert hub.resolve_weights(source.as_uri(), progress=False) == source
