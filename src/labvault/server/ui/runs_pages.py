"""The runs pages: ``/runs`` (the table), ``/runs/{ref}`` (one run), its artifact downloads, and
``/compare?runs=a,b`` (2 to 10 runs side by side).

The table pages on the server (``limit`` + ``offset`` in the query: a page never loads more than its
rows, whatever the number of runs) with the filter language of ``runs list --filter``. Metric
histories come downsampled by the database (``runs.history_envelope``: each step range's minimum and
maximum; a finished run's kept by the server: ``chart_data.py``) and the page's script draws them
(``static/charts.js``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from labvault.entities import Run
from labvault.errors import LabvaultError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.safeload import loads_json
from labvault.server.deps import Caller
from labvault.server.ui import render
from labvault.server.ui.chart_data import envelope_of
from labvault.server.ui.session import page_caller, protect
from labvault.services.tracking.filters import FilterSyntaxError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Reader = Annotated[Caller, Depends(page_caller("reader"))]

PAGE_SIZES = (25, 50, 100, 250)
MAX_TEXT = 256 * 1024  # bytes of a patch, config file, stdout or stderr shown on a page
MAX_DEFAULT_COLUMNS = 12
_ATTRIBUTE_COLUMNS = (("name", "Name"), ("id", "Id"), ("status", "Status"), ("project", "Project"))
_TAIL_COLUMNS = (("user", "User"), ("started", "Started"))
_REPORT = "reproduce.json"


# -- helpers ---------------------------------------------------------------------------------------
def protect_page(request: Request, name: str, **context: Any) -> HTMLResponse:
    """The page ``name`` with the pages' security headers (a strict Content-Security-Policy)."""
    page = render(request, name, **context)
    protect(page)
    return page


def show_value(value: object) -> str:
    """A param, metric or tag value as a table shows it."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _cell(run: Run, column: str) -> str:
    scope, _, key = column.partition(".")
    if scope == "params":
        return show_value(run.params.get(key))
    if scope == "metrics":
        return show_value(run.metrics.get(key))
    return show_value(run.tags.get(key))


def _read_text(who: Caller, ref: object) -> dict[str, Any] | None:
    """The text of a stored object (patch, stdout...), cut at :data:`MAX_TEXT` bytes."""
    if not isinstance(ref, str):
        return None
    try:
        digest = Digest(ref.removeprefix("sha256:"))
        with who.vault.objects.open(digest, verify=False) as f:
            data = f.read(MAX_TEXT + 1)
    except LabvaultError as err:
        return {"text": "", "error": err.message, "cut": False, "sha256": ref}
    return {"text": data[:MAX_TEXT].decode("utf-8", "replace"), "cut": len(data) > MAX_TEXT, "sha256": ref}


def _packages(who: Caller, ref: object) -> list[dict[str, str]]:
    """The pinned packages of the run's environment record (name and version)."""
    found = _read_text(who, ref) if isinstance(ref, str) else None
    if not found or found["error" if "error" in found else "cut"]:
        return []
    try:
        doc = loads_json(found["text"].encode(), name=f"environment {ref}")
    except (LabvaultError, ValueError):
        return []
    packages = doc.get("packages") if isinstance(doc, dict) else None
    return [
        {"name": str(p.get("name", "")), "version": str(p.get("version", ""))}
        for p in packages or []
        if isinstance(p, dict)
    ]


def _diff_lines(text: str) -> list[tuple[str, str]]:
    """A patch's lines with the class that colours them."""
    out = []
    for line in text.splitlines():
        if line.startswith(("+++", "---", "diff ", "index ")):
            out.append(("meta", line))
        elif line.startswith("@@"):
            out.append(("hunk", line))
        elif line.startswith("+"):
            out.append(("add", line))
        elif line.startswith("-"):
            out.append(("del", line))
        else:
            out.append(("", line))
    return out


def _data_link(ref: str) -> str | None:
    """``/data/NAME/VERSION`` for ``data:NAME@VERSION``, its segments percent-encoded."""
    if not ref.startswith("data:") or "@" not in ref:
        return None
    name, _, version = ref[5:].partition("@")
    return f"/data/{quote(name, safe='')}/{quote(version, safe='')}"


# -- the runs table --------------------------------------------------------------------------------
@router.get("/runs", response_class=HTMLResponse)
def runs_table(
    request: Request,
    who: Reader,
    filter: Annotated[str, Query(max_length=10_000)] = "",
    sort: Annotated[str, Query(max_length=1000)] = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    size: Annotated[int, Query(ge=1, le=max(PAGE_SIZES))] = 50,
    col: Annotated[list[str] | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """Runs matching the filter, one page at a time, sorted by any column."""
    error: dict[str, Any] | None = None
    runs: list[Run] = []
    try:
        runs = who.vault.runs.list(filter=filter or None, sort=sort or None, limit=size + 1, offset=(page - 1) * size)
    except FilterSyntaxError as err:
        error = {"message": err.message, "text": filter, "caret": " " * (err.column - 1) + "^"}
    except ValidationError as err:
        error = {"message": err.message, "hint": err.hint}
    has_next = len(runs) > size
    runs = runs[:size]
    available = sorted({f"{scope}.{k}" for r in runs for scope, d in _scopes(r) for k in d})
    chosen = [c for c in (col or []) if c.partition(".")[0] in ("params", "metrics", "tags") and c.partition(".")[2]]
    columns = chosen if col else [c for c in available if not c.startswith("tags.")][:MAX_DEFAULT_COLUMNS]

    def url(**changes: Any) -> str:
        query: dict[str, Any] = {"filter": filter, "sort": sort, "page": page, "size": size, "col": columns}
        query.update(changes)
        pairs = [(k, v) for k, v in query.items() if v not in ("", None) and k != "col"]
        pairs += [("col", c) for c in (query["col"] if col or "col" in changes else [])]
        return "/runs?" + urlencode(pairs)

    def sort_link(key: str) -> dict[str, str]:
        current = sort.strip()
        if current == key:
            state, target = "ascending", f"-{key}"
        elif current == f"-{key}":
            state, target = "descending", key
        else:
            state, target = "none", key
        return {"key": key, "state": state, "url": url(sort=target, page=1)}

    headers = [{"label": label, **sort_link(key)} for key, label in _ATTRIBUTE_COLUMNS]
    headers += [{"label": c, **sort_link(c)} for c in columns]
    headers += [{"label": label, **sort_link(key)} for key, label in _TAIL_COLUMNS]
    rows = [
        {
            "run": r,
            "cells": [_cell(r, c) for c in columns],
            "started": r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for r in runs
    ]
    first = (page - 1) * size + 1
    return protect_page(
        request,
        "runs/table.html",
        filter=filter,
        sort=sort,
        size=size,
        sizes=PAGE_SIZES,
        error=error,
        headers=headers,
        rows=rows,
        columns=columns,
        available=sorted(set(available) | set(columns)),
        page=page,
        first=first,
        last=first + len(rows) - 1,
        prev_url=url(page=page - 1) if page > 1 else None,
        next_url=url(page=page + 1) if has_next else None,
    )


def _scopes(run: Run) -> list[tuple[str, dict[str, Any]]]:
    return [("params", dict(run.params)), ("metrics", dict(run.metrics)), ("tags", dict(run.tags))]


# -- one run ---------------------------------------------------------------------------------------
def _reproduction(who: Caller, run: Run) -> dict[str, Any] | None:
    """The run's reruns by ``labvault reproduce`` and the latest report stored with one."""
    reruns = who.vault.runs.list(filter=f"tags.reproduces = '{run.ref}'", sort="started", limit=100)
    if not reruns and "reproduce_verdict" not in run.tags:
        return None
    report = None
    for rerun in reversed(reruns):
        artifact = next((a for a in rerun.artifacts if a.name == _REPORT and a.kind == "file"), None)
        if artifact is not None and artifact.size <= MAX_TEXT:
            with who.vault.objects.open(artifact.digest, verify=True) as f:
                doc = loads_json(f.read(MAX_TEXT + 1), name=f"{rerun.ref}:{_REPORT}", hint="download the artifact")
            report = {"run": rerun, "json": json.dumps(doc, indent=2, sort_keys=True, default=str)}
            break
    return {"reruns": reruns, "report": report, "verdict": run.tags.get("reproduce_verdict")}


@router.get("/runs/{ref}", response_class=HTMLResponse)
def run_page(request: Request, ref: str, who: Reader) -> HTMLResponse:
    """Everything recorded about one run."""
    runs = who.vault.runs
    run = runs.get(ref)
    doc = runs.export(run.id)
    history = envelope_of(request, who, run)
    charts = [{"key": k, "series": [{"label": run.name, "points": v}]} for k, v in sorted(history.items())]
    patch = _read_text(who, run.capture.get("patch"))
    environment = doc.get("environment") or {}
    return protect_page(
        request,
        "runs/run.html",
        run=run,
        doc=doc,
        params=sorted(run.params.items()),
        tags=sorted(run.tags.items()),
        metrics=sorted(run.metrics.items()),
        charts=charts,
        show=show_value,
        patch=patch,
        patch_lines=_diff_lines(patch["text"]) if patch else [],
        inputs=[{"ref": i["ref"], "url": _data_link(i["ref"]), **i} for i in doc.get("inputs") or []],
        environment=[(k, show_value(v)) for k, v in sorted(environment.items())],
        packages=_packages(who, run.capture.get("environment")),
        stdout=_read_text(who, run.capture.get("stdout")),
        stderr=_read_text(who, run.capture.get("stderr")),
        reproduction=_reproduction(who, run),
        children=runs.list(filter=f"parent = '{run.id}'", sort="started", limit=500),
    )


@router.get("/runs/{ref}/artifacts/{name:path}")
def download_artifact(ref: str, name: str, who: Reader) -> StreamingResponse:
    """An artifact's bytes, verified against its sha256 as they are read."""
    run = who.vault.runs.get(ref)
    artifact = next((a for a in run.artifacts if a.name == name), None)
    if artifact is None:
        raise NotFound(f"{run.ref} has no artifact {name!r}", hint=f"see its artifacts at /runs/{run.id}")
    if artifact.kind != "file":
        raise ValidationError(
            f"{name!r} is a folder", hint=f"download it with `labvault runs download {run.ref} --name {name}`"
        )
    stream = who.vault.objects.open(artifact.digest, verify=True)

    def chunks() -> Iterator[bytes]:
        with stream:
            while block := stream.read(1 << 20):
                yield block

    filename = name.rsplit("/", 1)[-1]
    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
            "Content-Length": str(artifact.size),
            "X-Content-Type-Options": "nosniff",
        },
    )


# -- comparison ------------------------------------------------------------------------------------
_SECTIONS = (
    ("params", "Params"),
    ("metrics", "Metrics"),
    ("attributes", "Attributes and inputs"),
    ("artifacts", "Artifacts (sha256)"),
    ("code", "Code"),
    ("environment", "Environment"),
)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request, who: Reader, runs: Annotated[list[str] | None, Query(max_length=20)] = None
) -> HTMLResponse:
    """2 to 10 runs side by side (``?runs=a,b``): differing rows highlighted, metric charts overlaid."""
    refs = list(dict.fromkeys(r.strip() for item in runs or [] for r in item.split(",") if r.strip()))
    if not 2 <= len(refs) <= 10:
        raise ValidationError(
            f"compare needs 2 to 10 runs, not {len(refs)}",
            hint="tick the runs to compare in the runs table, or open /compare?runs=ID,ID",
        )
    found = [who.vault.runs.get(r) for r in refs]
    data = who.vault.runs.compare([r.id for r in found])
    sections = []
    for key, title in _SECTIONS:
        rows = data.get(key) or {}
        if key == "environment":
            rows = {k: v for k, v in rows.items() if k != "package_versions"}
            rows.update({f"package {n}": v for n, v in (data["environment"].get("package_versions") or {}).items()})
        sections.append(
            {
                "title": title,
                "rows": [(name, [show_value(v) for v in row["values"]], row["differs"]) for name, row in rows.items()],
            }
        )
    histories = [envelope_of(request, who, r) for r in found]
    keys = sorted({k for h in histories for k in h})
    charts = [
        {
            "key": k,
            "series": [
                {"label": f"{r.name} ({r.id[:8]})", "points": h[k]}
                for r, h in zip(found, histories, strict=True)
                if k in h
            ],
        }
        for k in keys
    ]
    return protect_page(
        request,
        "runs/compare.html",
        runs=found,
        sections=sections,
        charts=charts,
        share_url="/compare?runs=" + ",".join(r.id for r in found),
    )
