"""What a run may record as a param value, a metric value and a metric step.

- A metric value is a float64: anything with ``__float__`` or ``__index__`` (numpy scalars, ``Decimal``,
  ``Fraction``) that fits; NaN and the infinities are kept. Booleans, text and None are refused.
- A step is an integer from 0 to 2^63-1 (anything with ``__index__``, such as ``numpy.int64``).
- A seed is an integer from 0 to 2^32-1 (what PYTHONHASHSEED and ``numpy.random.seed`` accept).
- A param is a str, int, float, bool or None, or a list (tuple) or dict (str keys) of those, nested at
  most :data:`~labvault.safeload.MAX_DEPTH` deep; lists and dicts are stored as canonical JSON (sorted
  keys, no spaces). Anything else (an object, a set, bytes) is refused rather than stored as its repr.
- Text (a param's strings, a tag's value) holds no NUL and no undecodable bytes: no database keeps them.

Every refusal is a :class:`~labvault.errors.ValidationError` (exit 2) naming the key.
"""

from __future__ import annotations

import json
import math
import operator
from typing import Any, SupportsIndex, cast

from labvault.errors import ValidationError
from labvault.refs import check_utf8
from labvault.safeload import MAX_DEPTH

__all__ = [
    "MAX_LIMIT",
    "MAX_SEED",
    "MAX_STEP",
    "MAX_VALUE",
    "check_limit",
    "check_seed",
    "check_text",
    "encode_param",
    "metric_step",
    "metric_value",
]

MAX_STEP = 2**63 - 1
MAX_LIMIT = 2**63 - 1  # a query's LIMIT is a 64-bit integer in SQLite and PostgreSQL
MAX_SEED = 2**32 - 1  # the largest PYTHONHASHSEED, and numpy's legacy seed
MAX_VALUE = 6000  # characters of a param's text
# str(int) refuses more than 4,300 digits; such a param would be far past MAX_VALUE anyway.
_MAX_INT_BITS = 14_000
_PARAM_HINT = "params are str, int, float, bool or None, or lists and dicts of them; log other things as artifacts"


def metric_value(key: str, value: object) -> float:
    """A metric value as a float64; refuses text, None, booleans and numbers no float64 holds."""
    if isinstance(value, float):
        return value
    if isinstance(value, bool | str | bytes | bytearray) or value is None:
        raise ValidationError(
            f"metric {key!r} must be a number, got {type(value).__name__} {_short(value)}",
            hint="log numbers as metrics; text belongs in params or tags",
        )
    try:
        if hasattr(value, "__float__"):
            return float(value)  # type: ignore[arg-type]
        return float(operator.index(value))  # type: ignore[arg-type]
    except OverflowError:
        raise ValidationError(
            f"metric {key!r} is {_short(value)}, beyond what a float64 holds (about 1.8e308)",
            hint="log a scaled value, or its logarithm",
        ) from None
    except (TypeError, ValueError):
        raise ValidationError(
            f"metric {key!r} must be a number, got {type(value).__name__}",
            hint="log numbers as metrics; text belongs in params or tags",
        ) from None


def metric_step(key: str, step: object) -> int:
    """A step as an int from 0 to 2^63-1."""
    try:
        if isinstance(step, bool):
            raise TypeError
        number = operator.index(cast(SupportsIndex, step))
    except TypeError:
        raise ValidationError(
            f"metric {key!r}: step must be an integer, got {type(step).__name__} {_short(step)}",
            hint="pass step=<int>",
        ) from None
    if not 0 <= number <= MAX_STEP:
        raise ValidationError(
            f"metric {key!r}: step {_short(number)} is out of range (0 to 2^63-1)", hint="pass a step of 0 or more"
        )
    return int(number)


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValidationError(f"invalid seed {_short(seed)}", hint=f"a seed is an integer from 0 to {MAX_SEED}")
    return seed


def check_limit(limit: int) -> int:
    if not 0 <= limit <= MAX_LIMIT:
        raise ValidationError(f"invalid limit {_short(limit)}", hint=f"give a limit from 0 to {MAX_LIMIT}")
    return limit


def encode_param(key: str, value: object) -> tuple[str, str]:
    """``(json, text)`` for a param value; numbers, strings, booleans and None are kept as they are."""
    raw = _plain(key, value, 0)
    if isinstance(raw, list | dict):
        text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        stored = text
    else:
        if isinstance(raw, float) and not math.isfinite(raw):
            raw = str(raw)  # as labvault has always stored a NaN or infinite param: its text
        text = raw if isinstance(raw, str) else json.dumps(raw)
        if isinstance(raw, float) and raw.is_integer():
            text = str(int(raw)) if abs(raw) < 2**53 else text
        stored = json.dumps(raw)
    if len(text) > MAX_VALUE:
        raise ValidationError(
            f"param {key!r} is {len(text)} characters long; the limit is {MAX_VALUE}",
            hint="log long values as an artifact (run.log_text / run.log_dict)",
        )
    return stored, text


def check_text(key: str, text: str, *, what: str) -> str:
    """Text a database can hold: no NUL (PostgreSQL refuses it) and no undecodable bytes."""
    if "\x00" in text:
        raise ValidationError(f"{what} {key!r} contains a NUL character", hint="remove it")
    if not text.isascii():
        check_utf8(text, what=f"{what} {key!r}: the text")
    return text


def _plain(key: str, value: object, depth: int) -> Any:
    """``value`` as plain JSON-able Python values; non-finite floats inside lists and dicts become text."""
    if isinstance(value, str):
        return check_text(key, value, what="param")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise ValidationError(f"param {key!r} is an integer too long to store", hint=_PARAM_HINT)
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) or depth == 0 else _non_finite(value)
    if isinstance(value, list | tuple | dict):
        if depth >= MAX_DEPTH:
            raise ValidationError(f"param {key!r} is nested more than {MAX_DEPTH} deep", hint=_PARAM_HINT)
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise ValidationError(f"param {key!r}: dict keys must be strings", hint=_PARAM_HINT)
            return {check_text(key, k, what="param"): _plain(key, v, depth + 1) for k, v in value.items()}
        return [_plain(key, v, depth + 1) for v in value]
    if not isinstance(value, bytes | bytearray | set | frozenset):
        # numpy scalars and the like: integers through __index__, reals through __float__.
        try:
            return _plain(key, operator.index(cast(SupportsIndex, value)), depth)
        except TypeError:
            pass
        if hasattr(value, "__float__"):
            try:
                return _plain(key, float(value), depth)  # type: ignore[arg-type]
            except (TypeError, ValueError, OverflowError):
                pass
    raise ValidationError(f"param {key!r} cannot be a {type(value).__name__}", hint=_PARAM_HINT)


def _non_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _short(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 10_000:
        return f"an integer of {value.bit_length()} bits"  # repr() refuses past 4,300 digits
    try:
        text = repr(value)
    except Exception:  # a user object's __repr__ may raise anything
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
