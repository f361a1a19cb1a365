"""The run folder guard: a training run never replaces, mixes with or degrades another run's files.

:func:`prepare_run_dir` is called once, by the process that writes (rank 0), before any work:

- A folder that already holds a run (``last.pt``, ``best.pt``, ``summary.json`` or ``metrics.csv``, at its top
  or in a stage subfolder) is refused unless ``resume`` (continue it) or ``overwrite`` (replace it) is given.
- ``overwrite`` moves the old run's files aside into ``PATH/.replaced-<UTC time>/`` rather than deleting
  them: a mistaken ``--overwrite`` loses nothing, and the user deletes that folder when sure.
- An exclusive lock (``fcntl.flock`` on ``PATH/.lock``, holding the writer's PID) is held until
  :meth:`RunDir.release` or the process ends (the kernel drops it even on a kill). A second run into the same
  folder fails at once, naming the folder and the PID that holds it. Without ``fcntl`` (Windows) no lock is taken.
- Temporary files left by an interrupted atomic write (``.NAME.*.tmp`` of :mod:`rtseg.io.files`,
  ``.metrics.csv.tmp`` of the trainer) are removed; the lock guarantees that no other writer owns them.
- ``resume`` on a finished run (its ``summary.json`` readable) returns ``state="finished"`` with that summary:
  the caller returns it as the result instead of training zero epochs and rewriting the records.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtseg.errors import UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["RunDirError", "RunDir", "RUN_FILES", "prepare_run_dir", "existing_run_files", "remove_stray_temporaries"]

# Files whose presence makes a folder a run (written by the trainer).
RUN_FILES = ("last.pt", "best.pt", "summary.json", "metrics.csv")
LOCK_NAME = ".lock"
REPLACED_PREFIX = ".replaced-"


class RunDirError(UserError, RuntimeError):
    """A run folder that cannot be used as asked (already holds a run, in use, not a folder)."""


@dataclass
class RunDir:
    """A prepared run folder. ``state``: ``new`` (train from scratch), ``resume`` (continue from its
    ``last.pt``) or ``finished`` (``resume`` of a completed run: ``summary`` is its record, nothing to train)."""

    path: Path
    state: str
    summary: dict[str, Any] | None = None
    replaced_to: Path | None = None  # where --overwrite moved the previous run
    removed_temporaries: list[Path] = field(default_factory=list)
    created: bool = False  # the folder did not exist before this run
    _lock_fd: int | None = field(default=None, repr=False)

    def discard_if_empty(self) -> bool:
        """After a run that failed before writing anything: remove the lock file, and the folder if this run created
        it, so a failed start leaves no folder that holds only ``.lock``. True when something was removed."""
        self.release()
        leftovers = [p for p in self.path.iterdir() if p.name != LOCK_NAME] if self.path.is_dir() else []
        if leftovers:
            return False
        (self.path / LOCK_NAME).unlink(missing_ok=True)
        if self.created:
            try:
                self.path.rmdir()
            except OSError:
                pass
        return True

    def release(self) -> None:
        """Drop the lock (the .lock file stays; it is reused by the next run)."""
        if self._lock_fd is not None:
            if fcntl is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def existing_run_files(path: Path) -> list[Path]:
    """The run files in ``path`` and its visible subfolders (stages of a multi-stage run)."""
    found = [path / name for name in RUN_FILES if (path / name).is_file()]
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += [sub / name for name in RUN_FILES if (sub / name).is_file()]
    return found


def _is_stray_temporary(p: Path) -> bool:
    return p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp")


def remove_stray_temporaries(path: Path) -> list[Path]:
    """Remove temporaries of interrupted atomic writes in ``path`` and its stage subfolders (call under the lock)."""
    removed = []
    folders = [path] + [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for folder in folders:
        for p in folder.iterdir():
            if _is_stray_temporary(p):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _lock(path: Path) -> int | None:
    lock_path = path / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies, as to every file of the run
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise RunDirError(f"run folder {str(path)!r} is in use by another run (PID {holder}); wait for it to finish, "
                          f"stop it, or write this run to another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.fsync(fd)
    return fd


def _read_summary(path: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError):
        return None  # absent, or cut short by a kill: the run is not finished
    return summary if isinstance(summary, dict) else None


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = path / f"{REPLACED_PREFIX}{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = path / f"{REPLACED_PREFIX}{stamp}-{n}"
    target.mkdir()
    for p in path.iterdir():
        if p.name == LOCK_NAME or p.name.startswith(REPLACED_PREFIX):
            continue
        shutil.move(str(p), str(target / p.name))
    return target


def prepare_run_dir(path: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> RunDir:
    """Lock ``path`` for this run and decide how it starts (see the module docstring); raise RunDirError if it cannot."""
    path = Path(path)
    if resume and overwrite:
        raise RunDirError(f"--resume and --overwrite contradict each other for {str(path)!r}: continue the run or replace it, not both")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run folder {str(path)!r} is an existing file, not a folder; choose another output folder")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run folder {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        fd = _lock(path)
    except PermissionError as exc:
        raise RunDirError(f"run folder {str(path)!r} is not writable: {exc.strerror or exc}") from exc
    run = RunDir(path, "new", created=created, _lock_fd=fd)
    try:
        run.removed_temporaries = remove_stray_temporaries(path)
        existing = existing_run_files(path)
        if resume:
            if not existing:
                raise RunDirError(f"--resume: {str(path)!r} holds no run to continue (no {', '.join(RUN_FILES)}); "
                                  "leave out --resume to start a new run there")
            run.summary = _read_summary(path)
            run.state = "finished" if run.summary is not None else "resume"
        elif existing:
            if not overwrite:
                names = ", ".join(sorted({str(p.relative_to(path)) for p in existing}))
                raise RunDirError(f"run folder {str(path)!r} already holds a run ({names}); pass --resume to continue it, "
                                  "--overwrite to replace it (the old files are moved to a .replaced-<time> subfolder), "
                                  "or choose another output folder")
            run.replaced_to = _move_aside(path)
    except BaseException:
        run.release()
        raise
    return run
