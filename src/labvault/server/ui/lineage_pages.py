"""Lineage pages: where a model, run or snapshot came from and what depends on it, and the diff of
two lineages.

``/lineage?ref=REF`` (or ``/lineage/REF``, the reference percent-encoded) shows both walks of
``vault.lineage`` as nested lists whose nodes link to their pages (model version -> run ->
snapshots, commit, config, environment; snapshot -> runs -> versions -> aliases).
``/lineage/diff?a=&b=`` shows data, code, config, environment, seeds and metrics side by side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from labvault.server.deps import Caller
from labvault.server.ui import render
from labvault.server.ui.session import page_caller
from labvault.services.lineage import Lineage, LineageNode

__all__ = ["MAX_CHILDREN", "MAX_DEPTH", "router"]

router = APIRouter(include_in_schema=False)
Reader = Annotated[Caller, Depends(page_caller("reader"))]
Ref = Annotated[str, Query(max_length=600, description="run:<id>, data:<name>@v<N>, <project>/<model>@<v|alias>")]

#: Children listed under one node (a snapshot read by 90,000 runs lists these and counts the rest).
MAX_CHILDREN = 200
#: Levels drawn; a deeper node links to its own lineage page.
MAX_DEPTH = 30
_DATA = re.compile(r"data:(.+)@v([0-9]+)")
_MODEL = re.compile(r"([^/@]+)/([^/@]+)@(.+)")


@dataclass(frozen=True, slots=True)
class Item:
    """One node as drawn: how it was reached (``edge``), its link, and what it leads to."""

    node: LineageNode
    edge: str
    href: str | None
    lineage_href: str | None
    children: tuple[Item, ...]
    more: int = 0  # children not listed
    seen: bool = False  # drawn already higher up: not expanded again
    cut: bool = False  # deeper than MAX_DEPTH: follow lineage_href


@router.get("/lineage/diff", response_class=HTMLResponse)
def diff_page(request: Request, who: Reader, a: Ref = "", b: Ref = "") -> HTMLResponse:
    result = who.vault.lineage.diff(a, b) if a and b else None
    return render(request, "lineage/diff.html", a=a, b=b, diff=result)


@router.get("/lineage", response_class=HTMLResponse)
def lineage_page(request: Request, who: Reader, ref: Ref = "") -> HTMLResponse:
    return _page(request, who, ref.strip())


@router.get("/lineage/{ref:path}", response_class=HTMLResponse)
def lineage_path_page(request: Request, ref: str, who: Reader) -> HTMLResponse:
    return _page(request, who, ref.strip()[:600])


def _page(request: Request, who: Caller, ref: str) -> HTMLResponse:
    if not ref:
        return render(request, "lineage/index.html", ref="", upstream=None, downstream=None)
    service = who.vault.lineage
    up, down = service.upstream(ref), service.downstream(ref)
    return render(
        request,
        "lineage/index.html",
        ref=ref,
        root=up.node(up.root),
        upstream=_tree(up),
        downstream=_tree(down),
    )


def node_href(node: LineageNode) -> str | None:
    """The page of the thing a node names, if it has one."""
    if node.kind == "run":
        return f"/runs/{quote(node.id, safe='')}"
    if node.kind == "snapshot" and (m := _DATA.fullmatch(node.ref)):
        return f"/data/{quote(m.group(1), safe='')}/v{m.group(2)}"
    if node.kind == "model_version" and (m := _MODEL.fullmatch(node.ref)):
        project, model, version = (quote(g, safe="") for g in m.groups())
        return f"/models/{project}/{model}/versions/{version}"
    if node.kind == "alias" and (m := _MODEL.fullmatch(node.ref)):
        return f"/models/{quote(m.group(1), safe='')}/{quote(m.group(2), safe='')}"
    if node.kind == "import" and node.ref.startswith(("http://", "https://")):
        return node.ref
    return None


def _lineage_href(node: LineageNode) -> str | None:
    if node.kind in ("run", "snapshot", "model_version", "alias", "object"):
        return "/lineage?ref=" + quote(node.ref, safe="")
    return None


def _tree(graph: Lineage) -> Item:
    """The walk's tree from the root; a node met again is drawn once more, unexpanded."""
    out = graph.tree()
    nodes = {n.ref: n for n in graph.nodes}
    drawn: set[str] = set()

    def item(ref: str, edge: str, depth: int) -> Item:
        node = nodes.get(ref) or LineageNode(ref, ref, "unknown")
        seen = ref in drawn
        drawn.add(ref)
        below = out.get(ref, []) if not seen else []
        cut = bool(below) and depth >= MAX_DEPTH
        kids = () if cut else tuple(item(target, kind, depth + 1) for kind, target in below[:MAX_CHILDREN])
        more = 0 if cut else max(len(below) - MAX_CHILDREN, 0)
        return Item(node, edge, node_href(node), _lineage_href(node), kids, more, seen and ref in out, cut)

    return item(graph.root, "", 0)
