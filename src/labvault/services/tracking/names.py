"""Validation of what users name in a run: keys, run names, run ids (values: :mod:`.values`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from labvault.errors import ValidationError
from labvault.refs import RunRef, check_utf8, parse_ref

__all__ = [
    "MAX_KEY",
    "default_run_name",
    "parse_run_id",
    "validate_key",
    "validate_run_name",
]

MAX_KEY = 250
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-./ ]+$")
_BARE_ID_RE = re.compile(r"^[0-9a-f]{6,32}$")


def validate_key(key: object, *, what: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or not _KEY_RE.match(key) or ".." in key.split("/"):
        raise ValidationError(
            f"invalid {what} key {key!r}",
            hint=f"use letters, digits, '_', '-', '.', '/' and spaces, at most {MAX_KEY} characters",
        )
    if key.startswith(("/", " ")) or key.endswith((" ", "/")):
        raise ValidationError(f"invalid {what} key {key!r}", hint="no leading or trailing '/' or space")
    return key


def validate_run_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise ValidationError(f"invalid run name {name!r}", hint="a run name is 1 to 256 printable characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValidationError(f"run name {name!r} contains control characters", hint="remove them")
    return check_utf8(name, what="run name")


def parse_run_id(ref: str) -> str:
    """``run:<id>``, a bare id, or a unique prefix of 6+ hex digits (lowercased)."""
    text = ref.strip() if isinstance(ref, str) else ""
    if text.startswith("run:"):
        return parse_ref(text, expect=RunRef).id  # type: ignore[union-attr, no-any-return]
    low = text.lower()
    if not _BARE_ID_RE.match(low):
        raise ValidationError(
            f"invalid run reference {ref!r}", hint="give run:<id>, an id, or a unique prefix of 6+ hex digits"
        )
    return low


def default_run_name(argv: Sequence[str]) -> str:
    """The script or command name: ``train`` for ``python train.py``, ``make`` for ``make all``."""
    args = [a for a in argv[1:] if not a.startswith("-")] if argv and Path(argv[0]).name.startswith("python") else argv
    for arg in args:
        stem = Path(arg).stem
        if stem and stem not in ("-c", "-m"):
            return stem[:256]
    return "run"
