"""Names a filesystem stores as one file: ``a.csv`` and ``A.csv`` where case folds (macOS, Windows),
composed and decomposed accents where Unicode normalisation folds (APFS, HFS+).

A checkout that wrote both would silently keep one; :func:`fold_collisions` finds such pairs before
anything is written.
"""

from __future__ import annotations

import os
import secrets
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

from labvault.errors import LabvaultError
from labvault.storage.contained import Dest

__all__ = ["fold_collisions", "name_folding"]


def _widest_fold(name: str) -> str:
    if name.isascii():
        return name.lower()
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def name_folding(near: Path) -> Callable[[str], str]:
    """How the filesystem holding ``near`` (or its nearest existing parent) compares names.

    A probe file tells case-insensitive (macOS, Windows) and normalisation-insensitive (APFS, HFS+)
    filesystems from exact ones (ext4, xfs); the probe is removed at once.
    """
    folder = Path(os.path.abspath(near))
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    probe = f".labvault-fold-{secrets.token_hex(4)}-\u00c9"  # É, composed
    try:
        with Dest.open(folder, create=False) as dest:
            dest.write_file(probe, b"", overwrite=False)
            try:
                folds_case = dest.lstat(probe.lower()) is not None
                folds_form = dest.lstat(unicodedata.normalize("NFD", probe)) is not None
            finally:
                dest.remove(probe)
    except LabvaultError:
        return _widest_fold  # cannot probe: assume the worst
    if folds_case and folds_form:
        return _widest_fold
    if folds_case:
        return str.casefold
    if folds_form:
        return lambda name: unicodedata.normalize("NFD", name)
    return str


def fold_collisions(paths: Iterable[str], near: Path, fold: Callable[[str], str] | None = None) -> list[str]:
    """Pairs of ``paths`` that would land on the same file below ``near`` (``a`` vs ``A``, composed
    vs decomposed accents), as ``"a and A"``; empty on an exact filesystem. The filesystem is only
    probed when the names could collide at all."""
    seen: dict[str, str] = {}
    out: list[str] = []
    widest = {_widest_fold(p) for p in paths}
    if len(widest) == len(set(paths)):
        return []
    fold = fold or name_folding(near)
    for p in sorted(paths):
        key = fold(p)
        if key in seen and seen[key] != p:
            out.append(f"{seen[key]} and {p}")
        seen.setdefault(key, p)
    return out
