"""Downsampling metric histories for the run page's charts: extremes kept, order kept, size bounded."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labvault.errors import ValidationError
from labvault.server.ui.downsample import MIN_POINTS, downsample

values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([math.inf, -math.inf, math.nan, 0.0, -0.0]),
)


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, float]]:
    gaps = draw(st.lists(st.integers(1, 1000), max_size=400))
    step = draw(st.integers(-5, 5))
    out = []
    for gap in gaps:
        step += gap
        out.append((step, draw(values)))
    return out


def _numbers(points: list[tuple[int, float]]) -> list[float]:
    return [v for _, v in points if not math.isnan(v)]


def test_short_history_is_returned_whole() -> None:
    points = [(0, 1.0), (1, math.nan), (2, math.inf), (3, -2.0), (4, 0.5)]
    assert downsample(points, 5) == points
    assert downsample(points, 1000) == points
    assert downsample([], 5) == []


def test_bucket_keeps_first_min_max_last_in_step_order() -> None:
    # 8 points into 4 slots: one bucket of all 8.
    points = [(0, 3.0), (1, 5.0), (2, 9.0), (3, 4.0), (4, -1.0), (5, 2.0), (6, 7.0), (7, 6.0)]
    assert downsample(points, 5) == [(0, 3.0), (2, 9.0), (4, -1.0), (7, 6.0)]


def test_one_step_spike_survives() -> None:
    points = [(s, 1.0) for s in range(100_000)]
    points[54_321] = (54_321, 1e9)
    points[77_777] = (77_777, -1e9)
    out = downsample(points, 200)
    assert (54_321, 1e9) in out
    assert (77_777, -1e9) in out
    assert out[0] == (0, 1.0)
    assert out[-1] == (99_999, 1.0)


def test_nan_and_infinities_are_kept() -> None:
    points = [(s, float(s % 7)) for s in range(10_000)]
    points[1234] = (1234, math.nan)
    points[5000] = (5000, math.inf)
    points[6000] = (6000, -math.inf)
    out = downsample(points, 100)
    assert len(out) <= 100
    assert any(s == 1234 and math.isnan(v) for s, v in out)
    assert (5000, math.inf) in out
    assert (6000, -math.inf) in out


def test_all_nan_history_keeps_nans() -> None:
    points = [(s, math.nan) for s in range(1000)]
    out = downsample(points, 50)
    assert 0 < len(out) <= 50
    assert all(math.isnan(v) for _, v in out)


def test_too_few_points_asked_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        downsample([(0, 1.0)] * 10, MIN_POINTS - 1)
    assert info.value.hint


@given(points=histories(), max_points=st.integers(MIN_POINTS, 120))
def test_properties(points: list[tuple[int, float]], max_points: int) -> None:
    out = downsample(points, max_points)
    # Size bound, and exact when it fits.
    assert len(out) <= max(max_points, 0)
    if len(points) <= max_points:
        assert out == points
    # A subsequence of the input: steps strictly increasing, each point unchanged.
    steps = [s for s, _ in out]
    assert steps == sorted(set(steps))
    given_points = dict(points)
    for s, v in out:
        assert s in given_points
        assert v == given_points[s] or (math.isnan(v) and math.isnan(given_points[s]))
    if points:
        # The ends, the global extremes, and a NaN when there is one.
        assert out[0][0] == points[0][0]
        assert out[-1][0] == points[-1][0]
        numbers = _numbers(points)
        if numbers:
            assert min(_numbers(out)) == min(numbers)
            assert max(_numbers(out)) == max(numbers)
        if len(numbers) < len(points):
            assert len(_numbers(out)) < len(out)


def test_ten_metrics_of_100k_points_downsample_fast() -> None:
    histories = [[(s, math.sin(s / (100 + k)) + k) for s in range(100_000)] for k in range(10)]
    # CPU time, not wall time: the machine running the suite may be shared.
    t = time.process_time()
    outs = [downsample(h, 1000) for h in histories]
    elapsed = time.process_time() - t
    assert all(len(o) <= 1000 for o in outs)
    # The whole run page has 1 s for 10 such charts; downsampling is a small share of it.
    assert elapsed < 0.5, f"downsampling 10 x 100,000 points took {elapsed:.3f} s of CPU"
