"""Progress on long loops (label scans, class counting): a bar or lines on stderr, never minutes of silence."""
from __future__ import annotations

import sys

__all__ = ["progress_range"]


def progress_range(n: int, description: str, progress: bool | None = None, unit: str = "label"):
    """``range(n)`` reported on stderr when ``progress`` (None: when ``n > 50``): a tqdm bar when tqdm is
    installed, else a line at the start and one at the end."""
    if not (n > 50 if progress is None else progress):
        return range(n)
    try:
        from tqdm import tqdm
    except ImportError:
        return _with_lines(n, description, unit)
    return tqdm(range(n), desc=description, unit=unit, leave=False, file=sys.stderr)


def _with_lines(n: int, description: str, unit: str):
    print(f"{description}: {n} {unit}s ...", file=sys.stderr, flush=True)
    yield from range(n)
    print(f"{description}: done", file=sys.stderr, flush=True)
