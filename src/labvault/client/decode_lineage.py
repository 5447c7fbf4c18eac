"""Validating decoders for lineage answers: ``Lineage.to_json()`` and ``LineageDiff.to_json()`` back
into the values the CLI renders (``cli/lineage.py``)."""

from __future__ import annotations

from typing import Any

from labvault.client.decode import Doc, malformed, number
from labvault.services.lineage import Lineage, LineageDiff, LineageEdge, LineageNode
from labvault.services.lineage.diff import (
    CodeChange,
    ConfigChange,
    DataChange,
    MetricRow,
    PackageChange,
    SeedRow,
)

__all__ = ["lineage", "lineage_diff"]


def _opt_number(value: Any, what: str) -> float | None:
    return None if value is None else number(value, what)


def lineage(raw: Any) -> Lineage:
    d = Doc(raw, "lineage")
    nodes = []
    for item in d.items("nodes"):
        n = Doc(item, "lineage node")
        nodes.append(
            LineageNode(n.text("id"), n.text("ref"), n.text("kind"), n.opt_text("label") or "", n.strs("marks"))
        )
    edges = []
    for item in d.items("edges"):
        e = Doc(item, "lineage edge")
        edges.append(LineageEdge(e.text("from"), e.text("to"), e.text("kind")))
    known = {n.ref for n in nodes}
    root = d.text("root")
    if root not in known or any(e.source not in known or e.target not in known for e in edges):
        raise malformed("lineage", "an edge or the root names no node")
    direction = d.text("direction")
    if direction not in ("upstream", "downstream"):
        raise malformed("lineage", f"direction {direction[:20]!r}")
    truncated = d.raw.get("truncated", False)
    return Lineage(root, direction, d.opt_integer("depth"), tuple(nodes), tuple(edges), truncated is True)


def _data(raw: Any) -> DataChange:
    d = Doc(raw, "lineage data change")
    files = Doc(d.raw.get("files") or {}, "lineage data change")
    records = Doc(d.raw.get("records") or {}, "lineage data change")
    return DataChange(
        dataset=d.text("dataset"),
        a=d.opt_text("a"),
        b=d.opt_text("b"),
        files_added=files.opt_integer("added") or 0,
        files_removed=files.opt_integer("removed") or 0,
        files_modified=files.opt_integer("modified") or 0,
        records=(records.opt_integer("a"), records.opt_integer("b")),
        schema=d.strs("schema"),
        max_psi=_opt_number(d.raw.get("max_psi"), "max_psi"),
        max_psi_column=d.opt_text("max_psi_column"),
        verdict=d.opt_text("verdict") or "no change",
        note=d.opt_text("note"),
    )


def _code(raw: Any) -> CodeChange:
    d = Doc(raw, "lineage code change")
    patch = Doc(d.raw.get("patch") or {}, "lineage code change")
    files = []
    for item in d.items("files"):
        f = Doc(item, "lineage code change")
        files.append((f.text("status"), f.text("path")))
    return CodeChange(
        a=d.opt_text("a"),
        b=d.opt_text("b"),
        commits=d.opt_integer("commits"),
        commits_back=d.opt_integer("commits_back"),
        files=tuple(files),
        files_changed=d.opt_integer("files_changed"),
        patch_a=patch.opt_text("a"),
        patch_b=patch.opt_text("b"),
        note=d.opt_text("note"),
    )


def lineage_diff(raw: Any) -> LineageDiff:
    d = Doc(raw, "lineage diff")
    runs = Doc(d.raw.get("runs"), "lineage diff")
    env = Doc(d.raw.get("environment") or {}, "lineage diff")
    config = [Doc(c, "lineage config change") for c in d.items("config")]
    packages = [Doc(p, "lineage package change") for p in env.items("packages")]
    seeds = [Doc(s, "lineage seed") for s in d.items("seeds")]
    metrics = [Doc(m, "lineage metric") for m in d.items("metrics")]
    return LineageDiff(
        a=d.text("a"),
        b=d.text("b"),
        run_a=runs.text("a"),
        run_b=runs.text("b"),
        data=tuple(_data(x) for x in d.items("data")),
        code=_code(d.raw.get("code")),
        config=tuple(
            ConfigChange(c.text("source"), c.opt_text("key") or "", c.raw.get("a"), c.raw.get("b"), c.text("change"))
            for c in config
        ),
        environment=tuple(PackageChange(p.text("name"), p.opt_text("a"), p.opt_text("b")) for p in packages),
        environment_note=env.opt_text("note"),
        seeds=tuple(SeedRow(s.text("name"), s.raw.get("a"), s.raw.get("b")) for s in seeds),
        metrics=tuple(
            MetricRow(m.text("name"), _opt_number(m.raw.get("a"), "metric"), _opt_number(m.raw.get("b"), "metric"))
            for m in metrics
        ),
    )
