"""Writing outputs: check before any work that an output can be written, and report a full or read-only disk plainly.

:func:`check_writable` is called by a command on each output path before it starts (a training, an evaluation,
an export), so that a read-only folder or a file in the way is reported at once, not after the work.
:func:`reraise_write_error` turns the ``OSError`` of a full, read-only or forbidden disk met during a write into a
:class:`WriteError` naming the path; the atomic writers call it after removing their temporary file, so the
message can say that the previous file is intact.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from rtseg.errors import UserError

__all__ = ["WriteError", "OutputError", "DISK_ERRNOS", "check_writable", "reraise_write_error", "atomic_write_text", "file_mode", "staged_output", "not_a_file"]

# errno values that mean "this disk or folder cannot take the write", not a bug
DISK_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}


class WriteError(UserError, OSError):
    """A write refused by the disk (full, read-only, no permission); an ``OSError`` so existing handlers still see it."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]" prefix
        return str(self.strerror) if self.strerror else super().__str__()


class OutputError(UserError, ValueError):
    """An output path that cannot be written as asked, found before any work."""


def reraise_write_error(exc: BaseException, path: str | os.PathLike, previous_intact: bool = True) -> None:
    """Raise :class:`WriteError` from ``exc`` when it is a disk error (see DISK_ERRNOS); return otherwise.

    ``previous_intact``: the write was atomic (temporary file then rename), so a file already at ``path`` is
    unchanged and no partial file remains; the message says so.
    """
    if isinstance(exc, WriteError) or not isinstance(exc, OSError) or exc.errno not in DISK_ERRNOS:
        return
    reason = DISK_ERRNOS[exc.errno]
    if previous_intact:
        outcome = "nothing was lost: the previous file is intact" if Path(path).exists() else "no partial file was left"
    else:
        outcome = "the file may be incomplete"
    hint = "free some space or write to another disk" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "choose a writable location"
    raise WriteError(exc.errno, f"{reason} while writing {str(path)!r}; {outcome}. {hint[0].upper()}{hint[1:]}.") from exc


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file (0o666 less the umask). Atomic writes create their
    temporary with ``mkstemp`` (0o600); they take this mode before the rename, so every file of a run has the same mode."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read the umask by setting it, and put it back at once
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def staged_output(path: str | os.PathLike):
    """Yield a temporary path with ``path``'s name, in a hidden folder beside it; on success every file written into
    that folder (an export may write several: an IR's .xml and .bin) is renamed into ``path``'s folder, on failure or
    interruption the folder is removed. So a failed or interrupted export never leaves a file that looks finished,
    and a file already at ``path`` stays as it was until the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name[:40]}.", suffix=".partial", dir=path.parent))
    try:
        yield stage / path.name
        mode = file_mode()
        for p in sorted(stage.iterdir()):
            if p.is_file():
                os.chmod(p, mode)
                os.replace(p, path.parent / p.name)
    except BaseException as exc:
        reraise_write_error(exc, path)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, fsync, rename over it; disk errors become WriteError."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        reraise_write_error(exc, path)
        raise
    return path


def not_a_file(path: str | os.PathLike) -> str | None:
    """None for an existing regular file, else what it is instead: ``does not exist``, ``is a folder`` or ``is not a
    regular file (a FIFO, device or socket)``. Checked before a file is opened for reading: a FIFO blocks the reader
    and ``/dev/zero`` never ends."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    return "is not a regular file (a FIFO, device or socket); give a file"


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe(folder: Path, target: Path, option: str = "--out") -> None:
    """Create and remove a file in ``folder``: the only test that also holds for root and read-only mounts."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rtseg-write-check.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        if exc.errno == errno.ENOENT and folder.is_dir():  # /proc, /sys: folders of a kernel file system that hold no user files
            reason = "a system file system, where no files can be created"
        else:
            reason = DISK_ERRNOS.get(exc.errno, exc.strerror or str(exc))
        raise OutputError(f"{option} {str(target)!r} cannot be written: {str(folder)!r} is not writable ({reason}); "
                          f"choose a writable location") from exc


def check_writable(path: str | os.PathLike, *, kind: Literal["file", "dir"] = "file", overwrite: bool = False, option: str = "--out") -> Path:
    """Raise :class:`OutputError` naming ``path`` (and ``option``) when the output cannot be written; return it.

    ``kind="dir"``: a folder the command creates or writes into; an existing file at ``path`` is refused.
    ``kind="file"``: a file the command writes; an existing folder at ``path`` is refused, and an existing file
    too unless ``overwrite`` (the caller passes True where replacing the file is what the user asked for).
    Missing parent folders are fine (they are created) unless one of them is a file. Nothing is left behind.
    """
    if not str(path).strip():
        raise OutputError(f"{option} is empty; name a {'folder' if kind == 'dir' else 'file'}")
    path = Path(path)
    anchor = _nearest_existing(path)
    if anchor != path and not anchor.is_dir():
        raise OutputError(f"{option} {str(path)!r}: {str(anchor)!r} is a file, so no folder can be created under it")
    if kind == "dir":
        if path.exists() and not path.is_dir():
            raise OutputError(f"{option} {str(path)!r} is an existing file; a folder is needed here")
        _probe(anchor, path, option)
    elif kind == "file":
        if path.is_dir():
            raise OutputError(f"{option} {str(path)!r} is an existing folder; a file name is needed here")
        if path.exists() and not overwrite:
            raise OutputError(f"{option} {str(path)!r} already exists; remove it, choose another name, or pass --overwrite")
        if path.exists() and not os.access(path, os.W_OK):
            raise OutputError(f"{option} {str(path)!r} exists and is read-only; a writable path is needed")
        _probe(path.parent if path.exists() else anchor, path, option)
    else:
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    return path
