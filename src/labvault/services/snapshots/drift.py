"""Column statistics and drift between two versions of a tabular file.

Numeric columns: exact count, nulls, mean, standard deviation (population; Welford's streaming
update), min and max, and the population stability index (PSI). Categorical columns: exact count,
null rate and distinct count (exact up to ``DISTINCT_CAP`` distinct values, then a lower bound),
the top values and their frequency change.

PSI. The bins are 10 quantile bins of A: the edges are A's deciles ``s[floor(n*k/10)]`` for
k = 1..9 over A's sorted values ``s``; a value v falls in bin ``bisect_right(edges, v)``, so the
bins are (-inf, e1), [e1, e2), ..., [e9, +inf). With p_i and q_i the shares of A's and B's values
in bin i, ``PSI = sum((q_i - p_i) * ln(q_i / p_i))``. Smoothing: an empty bin's share is replaced
by ``PSI_EPSILON`` = 1e-4 (shares are not renormalised), so the index stays finite. The values are
a uniform reservoir sample of ``SAMPLE_SIZE`` per column (seeded, so a diff is reproducible); for
files with up to that many records the PSI is exact.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DISTINCT_CAP", "PSI_EPSILON", "SAMPLE_SIZE", "CategoricalStats", "NumericStats", "psi", "top_changes"]

PSI_BINS = 10
PSI_EPSILON = 1e-4
SAMPLE_SIZE = 100_000
DISTINCT_CAP = 100_000
TOP = 10


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(slots=True)
class NumericStats:
    count: int = 0
    nulls: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float | None = None
    max: float | None = None
    seen: int = 0
    sample: list[float] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def add(self, value: Any) -> None:
        x = _number(value)
        if x is None or math.isnan(x):
            self.nulls += 1
            return
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)
        self.min = x if self.min is None or x < self.min else self.min
        self.max = x if self.max is None or x > self.max else self.max
        # Algorithm R: a uniform sample of every value seen.
        self.seen += 1
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append(x)
        else:
            j = self.rng.randrange(self.seen)
            if j < SAMPLE_SIZE:
                self.sample[j] = x

    def to_json(self) -> dict[str, object]:
        return {
            "count": self.count,
            "nulls": self.nulls,
            "mean": self.mean if self.count else None,
            "std": math.sqrt(self.m2 / self.count) if self.count else None,
            "min": self.min,
            "max": self.max,
        }


@dataclass(slots=True)
class CategoricalStats:
    count: int = 0
    nulls: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    capped: bool = False

    def add(self, value: Any) -> None:
        if value is None or value == "":
            self.nulls += 1
            return
        self.count += 1
        key = value if isinstance(value, str) else str(value)
        if key in self.counts or len(self.counts) < DISTINCT_CAP:
            self.counts[key] += 1
        else:
            self.capped = True

    def frequency(self, key: str) -> float:
        return self.counts.get(key, 0) / self.count if self.count else 0.0

    def to_json(self) -> dict[str, object]:
        total = self.count + self.nulls
        return {
            "count": self.count,
            "null_rate": self.nulls / total if total else None,
            "distinct": len(self.counts),
            "distinct_is_lower_bound": self.capped,
            "top": [{"value": v, "frequency": n / self.count} for v, n in self.counts.most_common(TOP)],
        }


def psi(expected: Iterable[float], actual: Iterable[float], *, bins: int = PSI_BINS) -> float | None:
    """Population stability index of ``actual`` against ``expected`` (see the module docstring)."""
    a = sorted(expected)
    b = list(actual)
    if not a or not b:
        return None
    n = len(a)
    edges = [a[min(n - 1, (n * k) // bins)] for k in range(1, bins)]
    pa = [0] * bins
    pb = [0] * bins
    for x in a:
        pa[bisect_right(edges, x)] += 1
    for x in b:
        pb[bisect_right(edges, x)] += 1
    total = 0.0
    for ca, cb in zip(pa, pb, strict=True):
        p = max(ca / n, PSI_EPSILON)
        q = max(cb / len(b), PSI_EPSILON)
        total += (q - p) * math.log(q / p)
    return total


def top_changes(a: CategoricalStats, b: CategoricalStats) -> tuple[tuple[str, float, float], ...]:
    """The union of both top lists, with each value's frequency before and after."""
    keys = [k for k, _ in a.counts.most_common(TOP)]
    keys += [k for k, _ in b.counts.most_common(TOP) if k not in keys]
    return tuple((k, a.frequency(k), b.frequency(k)) for k in keys)
