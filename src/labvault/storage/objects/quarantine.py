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
from pathlib import Path

__all__ = ["sweep_quarantine"]


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
