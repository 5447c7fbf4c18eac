"""``labvault lineage REF``: where a model or run came from, or what depends on a snapshot."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from labvault.cli.context import open_vault
from labvault.cli.render import OUTPUT, print_json
from labvault.errors import ValidationError

if TYPE_CHECKING:
    from labvault.services.lineage import Lineage, LineageNode

__all__ = ["lineage_cmd", "render_dot", "render_mermaid", "render_tree"]


def lineage_cmd(
    ref: str = typer.Argument(
        ..., help="A model version (project/model@1.2.0 or @alias), run:<id>, data:<name>@vN or sha256:<hex>."
    ),
    upstream: bool = typer.Option(False, "--upstream", help="Walk to what REF came from (default for runs, models)."),
    downstream: bool = typer.Option(False, "--downstream", help="Walk to what depends on REF (default for data)."),
    depth: int | None = typer.Option(None, "--depth", help="Follow at most N links from REF (1 or more)."),
    json_output: bool = typer.Option(False, "--json", help="Print the graph as JSON: nodes (id, ref), edges."),
    mermaid: bool = typer.Option(False, "--mermaid", help="Print the graph as a Mermaid flowchart."),
    dot: bool = typer.Option(False, "--dot", help="Print the graph in Graphviz DOT."),
) -> None:
    """Show the lineage of REF as a tree: a model version -> its run -> the run's snapshots, commit,
    patch, config, environment, parent run and reproductions; a snapshot -> the runs that read it ->
    the model versions made from them -> the aliases pointing at them now.

    Edges in --json, --mermaid and --dot point the way data flowed. Deleted snapshots, archived
    versions and reproduction verdicts are marked. A sha256 REF gives the records that own the
    object.

    Exit codes: 0 shown; 2 bad usage (--depth below 1, two directions or formats); 3 REF not found.
    """
    if upstream and downstream:
        raise ValidationError("give --upstream or --downstream, not both", hint="omit both for the default direction")
    if sum((json_output, mermaid, dot)) > 1:
        raise ValidationError("give one of --json, --mermaid, --dot", hint="omit them all for the text tree")
    if depth is not None and depth < 1:
        raise ValidationError(f"--depth must be 1 or more, not {depth}", hint="omit --depth to walk everything")
    with open_vault() as vault:
        service = vault.lineage
        direction = "upstream" if upstream else "downstream" if downstream else service.default_direction(ref)
        graph = service.walk(ref, direction=direction, depth=depth)
    if json_output:
        print_json(graph.to_json())
    elif mermaid:
        OUTPUT.line(render_mermaid(graph))
    elif dot:
        OUTPUT.line(render_dot(graph))
    else:
        OUTPUT.line(render_tree(graph))
        if graph.truncated:
            OUTPUT.info(f"note: stopped at depth {graph.depth}; a larger --depth shows more")


def _label(node: LineageNode) -> str:
    text = node.ref
    if node.label and node.label != node.ref and node.kind not in ("commit",):
        text += f" ({_clean(node.label)})"
    if node.marks:
        text += " [" + ", ".join(_clean(m) for m in node.marks) + "]"
    return text


def _clean(text: str) -> str:
    # Labels come from records (paths, URLs, tags): never let one break a line or the terminal.
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def render_tree(graph: Lineage) -> str:
    """The walk as an indented tree; ``->`` where data flowed from the line above to this one, ``<-``
    where it flowed in; a node met again says so instead of repeating its subtree."""
    nodes = {n.ref: n for n in graph.nodes}
    lines = [_label(nodes[graph.root])]
    shown = {graph.root}
    # An explicit stack: a long chain of nested runs must not hit Python's recursion limit.
    flows = {(e.source, e.target, e.kind) for e in graph.edges}
    children = graph.tree()
    stack = [(graph.root, kind, kid, 1) for kind, kid in reversed(children.get(graph.root, ()))]
    while stack:
        parent, kind, kid, level = stack.pop()
        arrow = "->" if (parent, kid, kind) in flows else "<-"
        again = kid in shown
        lines.append(f"{'  ' * level}{arrow} {kind}: {_label(nodes[kid])}" + (" (shown above)" if again else ""))
        if not again:
            shown.add(kid)
            stack.extend((kid, k, grandkid, level + 1) for k, grandkid in reversed(children.get(kid, ())))
    return "\n".join(lines)


def render_mermaid(graph: Lineage) -> str:
    ids = {n.ref: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    for node in graph.nodes:
        text = _label(node).replace('"', "#quot;")
        lines.append(f'  {ids[node.ref]}["{text}"]')
    lines.extend(f"  {ids[e.source]} -->|{e.kind}| {ids[e.target]}" for e in graph.edges)
    return "\n".join(lines)


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def render_dot(graph: Lineage) -> str:
    lines = ["digraph lineage {", "  rankdir=LR;"]
    for node in graph.nodes:
        lines.append(f"  {_q(node.ref)} [label={_q(_label(node))}];")
    lines.extend(f"  {_q(e.source)} -> {_q(e.target)} [label={_q(e.kind)}];" for e in graph.edges)
    lines.append("}")
    return "\n".join(lines)
