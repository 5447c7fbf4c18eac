"""Entities as JSON documents, in the conventions every labvault output follows.

Timestamps ISO-8601 UTC with ``Z``, digests ``sha256:<hex>``, NaN and infinities as strings, and
every object that has a reference carries ``ref`` beside its ``id``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from pathlib import PurePath
from typing import Any

from labvault.entities import format_time, json_safe
from labvault.refs import Digest

__all__ = ["to_json"]


def to_json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return json_safe(value)  # the one NaN/Infinity encoding
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, Digest):
        return str(value)
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    own = getattr(value, "to_json", None)
    if callable(own):  # the entity's own JSON form, the one the CLI prints
        return to_json(own())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        doc = {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value) if not f.name.startswith("_")}
        ref = getattr(type(value), "ref", None)
        if isinstance(ref, property):
            doc["ref"] = to_json(value.ref)  # type: ignore[attr-defined]
        return doc
    return str(value)
