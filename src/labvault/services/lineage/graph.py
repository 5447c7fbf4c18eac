"""Lineage values: a graph of nodes (``id``, ``ref``) and edges (``from``, ``to``, ``kind``).

Edges always point the way data flowed (snapshot -> run -> model version -> alias; commit, config,
environment and patch -> run; run -> its nested runs and its reproductions), whichever way the
walk went. :meth:`Lineage.tree` gives the walk's own tree back for the text view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Lineage", "LineageEdge", "LineageNode"]

# Upstream, a run's reruns, a version's alias and an object's owners are found from the edge's source.
_FOUND_FROM_SOURCE = frozenset({"reproduced_by", "alias", "stored_in"})


# Nodes and edges are named tuples, not frozen dataclasses: a snapshot read by 90,000 runs makes
# 180,000 of them, and a frozen dataclass takes twice as long to build (one object.__setattr__ a field).
class LineageNode(NamedTuple):
    """One thing in a lineage: ``kind`` is run, snapshot, model_version, alias, commit, patch, config,
    environment, import, object or input; ``marks`` flag what the user should notice (deleted,
    archived, missing, a run's status, a reproduction's verdict)."""

    id: str
    ref: str
    kind: str
    label: str = ""
    marks: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "ref": self.ref, "kind": self.kind, "label": self.label, "marks": list(self.marks)}


class LineageEdge(NamedTuple):
    """``source`` -> ``target`` (node refs), printed as ``from`` and ``to``."""

    source: str
    target: str
    kind: str

    def to_json(self) -> dict[str, str]:
        return {"from": self.source, "to": self.target, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class Lineage:
    root: str  # the root node's ref
    direction: str  # upstream | downstream
    depth: int | None  # None: no limit
    nodes: tuple[LineageNode, ...]
    edges: tuple[LineageEdge, ...]
    truncated: bool = False  # the depth limit left links unwalked

    def node(self, ref: str) -> LineageNode:
        return next(n for n in self.nodes if n.ref == ref)

    def tree(self) -> Mapping[str, list[tuple[str, str]]]:
        """``{ref: [(edge kind, ref reached from it)]}`` in walk order: each edge was found from the
        node the walk was expanding, which its kind and the direction tell."""
        out: dict[str, list[tuple[str, str]]] = {}
        for edge in self.edges:
            if self.direction == "downstream" or edge.kind in _FOUND_FROM_SOURCE:
                out.setdefault(edge.source, []).append((edge.kind, edge.target))
            else:
                out.setdefault(edge.target, []).append((edge.kind, edge.source))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "direction": self.direction,
            "depth": self.depth,
            "truncated": self.truncated,
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [e.to_json() for e in self.edges],
        }
