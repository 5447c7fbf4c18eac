"""Downsampling a metric history for a chart: at most ``max_points`` points, extremes kept.

The history is cut into buckets of consecutive points; each bucket keeps its first, its minimum,
its maximum and its last point (in step order, each once), so a spike of one step is still drawn
and the line still starts and ends where the history does. Infinities are ordinary extremes (they
are the minimum or maximum of their bucket). A NaN cannot be a minimum or maximum, so a bucket holding
one also keeps its first NaN: the chart shows the gap instead of hiding it. When any NaN is
present the buckets are made smaller so that the output still fits in ``max_points``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import itemgetter

from labvault.errors import ValidationError

__all__ = ["MIN_POINTS", "downsample"]

#: The smallest ``max_points`` accepted: one bucket's first, minimum, maximum and last.
MIN_POINTS = 5

_second = itemgetter(1)


def downsample(points: Sequence[tuple[int, float]], max_points: int) -> list[tuple[int, float]]:
    """At most ``max_points`` of ``points`` (``(step, value)`` in step order), min and max of each bucket kept.

    The result is a subsequence of ``points``: the same tuples, in the same order. It is all of them
    when there are no more than ``max_points``.
    """
    if max_points < MIN_POINTS:
        raise ValidationError(
            f"cannot downsample to {max_points} points", hint=f"give max_points of {MIN_POINTS} or more"
        )
    n = len(points)
    if n <= max_points:
        return list(points)
    values = list(map(_second, points))
    has_nan = any(map(math.isnan, values))
    per_bucket = 5 if has_nan else 4
    buckets = max_points // per_bucket
    keep: list[int] = []
    for b in range(buckets):
        # Integer bounds spread the remainder over the buckets: sizes differ by at most one.
        lo = b * n // buckets
        hi = (b + 1) * n // buckets
        keep.extend(_bucket(values, lo, hi, has_nan))
    return [points[i] for i in keep]


def _bucket(values: list[float], lo: int, hi: int, has_nan: bool) -> list[int]:
    """The indices kept from ``values[lo:hi]``, ascending, each once."""
    window = values[lo:hi]
    first_nan: int | None = None
    if has_nan and any(map(math.isnan, window)):
        first_nan = lo + next(i for i, v in enumerate(window) if math.isnan(v))
        numbers = [(v, i) for i, v in enumerate(window) if not math.isnan(v)]
        if numbers:
            low, high = min(numbers)[1], max(numbers, key=lambda p: (p[0], -p[1]))[1]
            picks = {lo, hi - 1, lo + low, lo + high, first_nan}
        else:
            picks = {lo, hi - 1, first_nan}
    else:
        # min/max and index run in C: this is what keeps a 100,000-point history in milliseconds.
        picks = {lo, hi - 1, lo + window.index(min(window)), lo + window.index(max(window))}
    return sorted(picks)
