"""The quarantine folder: what a verifying read, fsck or pack recovery set aside, never read again.

Files there are named ``<digest>.<ns>`` (a corrupt object), ``<pack>.<offset>.<sha256 prefix>``
(damaged pack bytes) or ``index.sqlite[-wal|-shm].<ns>`` (a damaged pack index); a name starting
with ``.`` is one being written. A file's modification time is when it was set aside. Nothing removes
them on its own: ``fsck`` counts them and ``gc --quarantine`` removes those older than its grace period.

Raises plain ``OSError``; the store translates it once.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

__all__ = ["quarantine_bytes", "quarantine_file", "quarantined_copy", "sweep_quarantine"]


def quarantine_file(folder: Path, hexd: str, path: Path) -> Path:
    """Move a corrupt object file aside as ``<digest>.<ns>`` (gone already: nothing to move)."""
    folder.mkdir(exist_ok=True)
    target = folder / f"{hexd}.{time.time_ns()}"
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, target)
        os.utime(target)  # when it was set aside, for `gc --quarantine`'s grace period
    return target


def quarantine_bytes(folder: Path, hexd: str, data: bytes) -> Path:
    """Write a corrupt packed object's bytes aside as ``<digest>.<ns>``."""
    folder.mkdir(exist_ok=True)
    target = folder / f"{hexd}.{time.time_ns()}"
    target.write_bytes(data)
    return target


def quarantined_copy(folder: Path, hexd: str) -> Path | None:
    """The newest copy of an object set aside, if any."""
    moved = sorted(folder.glob(f"{hexd}.*"))
    return moved[-1] if moved else None


def sweep_quarantine(folder: Path, *, cutoff: float | None, remove: bool) -> tuple[int, int]:
    """``(files, bytes)`` set aside before ``cutoff`` (every finished one if None), removed with ``remove``."""
    files = nbytes = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0, 0
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        being_written = entry.name.startswith(".")  # or left by a crash while it was: gone once old
        if (cutoff is None and being_written) or (cutoff is not None and st.st_mtime > cutoff):
            continue
        files += 1
        nbytes += st.st_size
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    return files, nbytes
