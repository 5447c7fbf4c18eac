"""Validation of what users name in a run: keys, run names, run ids, values."""

from __future__ import annotations

import json
import math
import numbers
import re
from typing import Any

from labvault.errors import ValidationError
from labvault.refs import RunRef, parse_ref

__all__ = [
    "MAX_KEY",
    "encode_param",
    "metric_value",
    "parse_run_id",
    "validate_key",
    "validate_run_name",
]

MAX_KEY = 250
MAX_VALUE = 6000
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
    return name


def encode_param(key: str, value: object) -> tuple[str, str]:
    """``(json, text)`` for a param value; numbers, strings, booleans and None are kept as they are."""
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, float) and not math.isfinite(value):
            raw: Any = str(value)
        else:
            raw = value
    elif isinstance(value, numbers.Integral):
        raw = int(value)
    elif isinstance(value, numbers.Real):
        raw = float(value)
    else:
        raw = str(value)  # lists, paths, objects: their text, as MLflow stores every param
    text = raw if isinstance(raw, str) else json.dumps(raw)
    if isinstance(raw, float) and raw.is_integer():
        text = str(int(raw)) if abs(raw) < 2**53 else text
    if len(text) > MAX_VALUE:
        raise ValidationError(
            f"param {key!r} is {len(text)} characters long; the limit is {MAX_VALUE}",
            hint="log long values as an artifact (run.log_text / run.log_dict)",
        )
    return json.dumps(raw), text


def metric_value(key: str, value: object) -> float:
    """A metric value as a float; refuses text, None and booleans."""
    if isinstance(value, (bool, str | bytes)) or value is None:
        raise ValidationError(
            f"metric {key!r} must be a number, got {type(value).__name__} {value!r}",
            hint="log numbers as metrics; text belongs in params or tags",
        )
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValidationError(
            f"metric {key!r} must be a number, got {type(value).__name__}",
            hint="log numbers as metrics; text belongs in params or tags",
        ) from None


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
