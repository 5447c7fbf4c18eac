"""Data pages: datasets, a dataset's versions, a snapshot's manifest, and the diff of two versions.

``/data`` · ``/data/NAME`` · ``/data/NAME/VERSION`` (``v3`` or ``3``) · ``/data/NAME/diff?a=1&b=2``.
Every page reads ``caller.vault.data``, as the JSON API does; the diff draws one small chart per
column on the server (SVG), so the page needs no script.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from labvault.entities import ColumnDrift, DataDiff
from labvault.errors import ValidationError
from labvault.server.deps import Caller
from labvault.server.ui import render
from labvault.server.ui.session import page_caller

__all__ = ["MAX_FILES_SHOWN", "router"]

router = APIRouter(include_in_schema=False)
Reader = Annotated[Caller, Depends(page_caller("reader"))]
Version = Annotated[str, Query(max_length=24, description="v<N> or <N>")]

#: A manifest page lists this many files; the count above the table is always exact.
MAX_FILES_SHOWN = 2000
_CHART_WIDTH = 260
_BAR_HEIGHT = 14


def _version(text: str) -> str:
    """``v3`` or ``3`` -> ``v3``; anything else is a usage error."""
    bare = text[1:] if text[:1] in ("v", "V") else text
    if not bare.isdigit() or len(bare) > 19:
        raise ValidationError(f"not a data version: {text[:40]!r}", hint="versions read v1, v2, ... (or 1, 2, ...)")
    return f"v{int(bare)}"


def _ref(name: str, version: str) -> str:
    return f"data:{name}@{_version(version)}"


@router.get("/data", response_class=HTMLResponse)
def datasets_page(request: Request, who: Reader) -> HTMLResponse:
    return render(request, "data/index.html", datasets=who.vault.data.datasets())


@router.get("/data/{name}/diff", response_class=HTMLResponse)
def diff_page(request: Request, name: str, who: Reader, a: Version, b: Version) -> HTMLResponse:
    diff = who.vault.data.diff(_ref(name, a), _ref(name, b))
    return render(request, "data/diff.html", dataset=name, diff=diff, tables=_tables(diff))


@router.get("/data/{name}/{version}", response_class=HTMLResponse)
def snapshot_page(request: Request, name: str, version: str, who: Reader) -> HTMLResponse:
    manifest = who.vault.data.get(_ref(name, version))
    return render(
        request,
        "data/snapshot.html",
        dataset=name,
        snapshot=manifest.snapshot,
        files=manifest.files[:MAX_FILES_SHOWN],
        file_count=len(manifest.files),
        links=manifest.links[:MAX_FILES_SHOWN],
    )


@router.get("/data/{name}", response_class=HTMLResponse)
def dataset_page(request: Request, name: str, who: Reader) -> HTMLResponse:
    versions = who.vault.data.log(name)
    return render(request, "data/dataset.html", dataset=name, versions=versions)


# -- the diff's tables and charts -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of a chart, in SVG user units; ``label`` and ``title`` are text (escaped)."""

    x: float
    y: float
    width: float
    height: float
    side: str  # "a" (before) | "b" (after)
    label: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    marks: tuple[tuple[float, float], ...] = ()  # (x, y) of each side's mean, numeric columns only
    caption: str = ""


@dataclass(frozen=True, slots=True)
class ColumnRow:
    drift: ColumnDrift
    psi_level: str  # "" | "moderate" | "high" (0.1 and 0.25, the usual PSI bands)
    chart: Chart | None


@dataclass(frozen=True, slots=True)
class TableView:
    path: str
    before: int | None
    after: int | None
    added: tuple[str, ...]
    removed: tuple[str, ...]
    retyped: tuple[tuple[str, str, str], ...]
    columns: tuple[ColumnRow, ...]


def _tables(diff: DataDiff) -> list[TableView]:
    return [
        TableView(
            path=t.path,
            before=t.record_count_before,
            after=t.record_count_after,
            added=t.columns_added,
            removed=t.columns_removed,
            retyped=t.columns_retyped,
            columns=tuple(ColumnRow(c, _psi_level(c.psi), _chart(c)) for c in t.columns),
        )
        for t in diff.tabular
    ]


def _psi_level(psi: float | None) -> str:
    if psi is None or math.isnan(psi):
        return ""
    return "high" if psi >= 0.25 else "moderate" if psi >= 0.1 else ""


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _chart(col: ColumnDrift) -> Chart | None:
    return _numeric_chart(col) if col.kind == "numeric" else _categorical_chart(col)


def _numeric_chart(col: ColumnDrift) -> Chart | None:
    """Each side's range (min to max) on one shared axis, with a tick at its mean."""
    sides = []
    for side, stats in (("a", col.before), ("b", col.after)):
        low, high, mean = _num(stats.get("min")), _num(stats.get("max")), _num(stats.get("mean"))
        if low is not None and high is not None:
            sides.append((side, low, high, mean))
    if not sides:
        return None
    lo = min(s[1] for s in sides)
    hi = max(s[2] for s in sides)
    span = hi - lo or 1.0

    def x(value: float) -> float:
        return round((value - lo) / span * (_CHART_WIDTH - 2) + 1, 2)

    bars, marks = [], []
    for i, (side, low, high, mean) in enumerate(sides):
        y = 4 + i * (_BAR_HEIGHT + 6)
        name = "before" if side == "a" else "after"
        title = f"{name}: min {_fmt(low)}, max {_fmt(high)}, mean {_fmt(mean)}"
        bars.append(Bar(x(low), y, max(x(high) - x(low), 1.0), _BAR_HEIGHT, side, name, title))
        if mean is not None:
            marks.append((x(mean), y))
    height = 8 + len(sides) * (_BAR_HEIGHT + 6)
    return Chart(_CHART_WIDTH, height, tuple(bars), tuple(marks), f"{_fmt(lo)} to {_fmt(hi)}")


def _categorical_chart(col: ColumnDrift) -> Chart | None:
    """The most frequent values' shares before and after, side by side."""
    rows = col.top_changes[:6]
    if not rows:
        return None
    bars = []
    for i, (value, before, after) in enumerate(rows):
        y = 4 + i * (_BAR_HEIGHT + 10)
        half = _BAR_HEIGHT / 2
        for j, (side, share) in enumerate((("a", before), ("b", after))):
            width = max(float(share), 0.0) * (_CHART_WIDTH - 90)
            title = f"{value}: {'before' if side == 'a' else 'after'} {share:.1%}"
            bars.append(Bar(88.0, y + j * half, round(width, 2), half, side, value, title))
    height = 8 + len(rows) * (_BAR_HEIGHT + 10)
    return Chart(_CHART_WIDTH, height, tuple(bars), (), "share of rows")
