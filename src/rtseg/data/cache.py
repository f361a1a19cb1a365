"""rtseg's one cache folder, and per-dataset cache keys: a hash of the label files, so facts computed once over a dataset are reused while it is unchanged."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rtseg.errors import OptionError

__all__ = ["default_cache_dir", "file_list_key"]


def default_cache_dir() -> Path:
    """rtseg's one cache folder: ``$RTSEG_CACHE`` if set, else ``$XDG_CACHE_HOME/rtseg`` (``~/.cache/rtseg``).

    Downloaded weights go to its ``weights`` folder, facts computed over datasets to their own folders."""
    env = os.environ.get("RTSEG_CACHE")
    folder = Path(env).expanduser() if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rtseg"
    # the first existing part of the path must be a folder, or nothing can be cached under it
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        variable = "RTSEG_CACHE" if env else "XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else "HOME"
        raise OptionError(f"the cache folder {str(folder)!r} (from ${variable}) cannot be created: {str(probe)!r} is a file, "
                          f"not a folder; point ${'RTSEG_CACHE' if env else variable} at a folder (or unset it)")
    return folder


def file_list_key(dataset, num_classes: int, ignore_index: int) -> str | None:
    """A hash of the dataset's label files (path, size, modification time) and of how they are read
    (including a dataset's ``label_mapping_key``, e.g. a folder dataset's ``label_map``), or
    None for a dataset without files (the synthetic scenes)."""
    pairs = getattr(dataset, "pairs", None)
    if not pairs:
        return None
    h = hashlib.sha256()
    h.update(f"{type(dataset).__name__}|{num_classes}|{ignore_index}|{getattr(dataset, 'label_mapping_key', '')}\n".encode())
    for _, label in pairs:
        st = Path(label).stat()
        h.update(f"{Path(label).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]
