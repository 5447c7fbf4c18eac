"""fsck's walk of the packs: every pack's header and the framing of its records, and what is lost.

A walk reads each pack up to its indexed end and records what is not a sound record in the index's
``damage`` table (copied to ``quarantine/`` on the way: it stays a problem until ``gc`` rewrites the
pack). Rows of that table that claim a digest were left where re-indexing a pack found a record whose
bytes do not hash to it (``packfile.recover``, ``packrows.repair_rows``): they are reported once, as a
corrupt object is, unless the object was stored again since.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from labvault.storage.objects.packfile import PACK_MAGIC, Damage, quarantine_span, scan, transaction

__all__ = ["check_packs"]


def check_packs(
    conn: sqlite3.Connection, packs_dir: Path, quarantine_dir: Path, *, stored: Callable[[str], bool]
) -> tuple[list[str], list[str]]:
    """Walk the header and the framing of every record of every pack (fsck).

    Returns the problems, one line each, and the digests of records found corrupt when the
    index was rebuilt (reported once, as a corrupt object is). Damaged framing is copied to
    ``quarantine/`` and stays a problem until ``gc`` rewrites the pack. ``stored`` says whether
    a digest is indexed now.
    """
    for pack, name, end in conn.execute("SELECT id, name, indexed_end FROM packs").fetchall():
        found = _walk(conn, packs_dir, quarantine_dir, int(pack), str(name), int(end))
        if found:
            with transaction(conn):
                conn.executemany(
                    "INSERT OR IGNORE INTO damage (pack, start, stop) VALUES (?, ?, ?)",
                    [(pack, d.start, d.stop) for d in found],
                )
    problems: list[str] = []
    corrupt: list[str] = []
    rows = conn.execute(
        "SELECT p.name, d.start, d.stop, d.claimed FROM damage d JOIN packs p ON p.id = d.pack ORDER BY p.name, d.start"
    ).fetchall()
    for name, start, stop, claimed in rows:
        if claimed is not None:
            if not stored(claimed.hex()):  # else stored again since: nothing is lost
                corrupt.append(claimed.hex())
        elif start == 0:
            problems.append(f"pack {name}: its header is damaged (`labvault gc` rewrites the pack)")
        else:
            problems.append(
                f"pack {name}: {stop - start} bytes at offset {start} are not a sound record (copied to "
                "quarantine/; `labvault gc` rewrites the pack)"
            )
    conn.execute("DELETE FROM damage WHERE claimed IS NOT NULL")
    return problems, corrupt


def _walk(
    conn: sqlite3.Connection, packs_dir: Path, quarantine_dir: Path, pack: int, name: str, end: int
) -> list[Damage]:
    """The damage in a pack's header and its records' framing, up to its indexed end."""
    try:
        fd = os.open(packs_dir / name, os.O_RDONLY)
    except FileNotFoundError:  # reported as a lost pack
        return []
    try:
        size = os.fstat(fd).st_size
        found = [] if os.pread(fd, len(PACK_MAGIC), 0) == PACK_MAGIC else [Damage(0, len(PACK_MAGIC))]
        stop = min(size, end)
        if size < end:  # cut short behind the index's back: what was indexed there is gone
            found.append(Damage(size, end))
        if stop <= len(PACK_MAGIC):
            return found
        known = {
            int(offset): (bytes(digest), int(length))
            for digest, offset, length in conn.execute(
                "SELECT digest, offset, size FROM objects WHERE pack = ?", (pack,)
            )
        }
        with mmap.mmap(fd, stop, access=mmap.ACCESS_READ) as view:
            _, damage = scan(view, len(PACK_MAGIC), stop, known)
            for d in damage:
                quarantine_span(quarantine_dir, name, d.start, view[d.start : d.stop])
        return found + damage
    finally:
        os.close(fd)
