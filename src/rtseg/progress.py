"""Progress on long loops (label scans, class counting): a bar or lines on stderr, never minutes of silence."""
from __future__ import annotations

import contextlib
import contextvars
import sys

__all__ = ["progress_range", "progress_enabled"]

# Whether loops that decide for themselves (progress=None) may report: off under a task run with --quiet.
_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("rtseg_progress", default=True)


@contextlib.contextmanager
def progress_enabled(flag: bool):
    """Within the block, loops called with ``progress=None`` report only when ``flag`` (a --quiet task passes False)."""
    token = _ENABLED.set(bool(flag))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def progress_range(n: int, description: str, progress: bool | None = None, unit: str = "label"):
    """``range(n)`` reported on stderr when ``progress`` (None: when ``n > 50``): a tqdm bar when tqdm is
    installed, else a line at the start and one at the end. Under ``progress_enabled(False)`` the default is silence."""
    if not (n > 50 and _ENABLED.get() if progress is None else progress):
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
