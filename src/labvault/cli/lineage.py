"""``labvault lineage REF``: where a model or run came from, or what depends on a snapshot;
``labvault lineage diff A B``: what differs in the lineage of two model versions or runs.

``lineage`` is a group whose default command is the walk: ``lineage REF`` runs ``lineage show REF``,
so that ``lineage diff`` can sit beside it (a REF is never the word ``diff``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from labvault.cli.context import open_vault
from labvault.cli.render import OUTPUT, print_json
from labvault.errors import ValidationError

if TYPE_CHECKING:
    from labvault.services.lineage import Lineage, LineageDiff, LineageNode

__all__ = ["app", "diff_cmd", "lineage_cmd", "render_diff", "render_dot", "render_mermaid", "render_tree"]


class _DefaultShow(TyperGroup):
    """Arguments that do not start with a subcommand's name go to ``show``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["show", *args]
        return list(super().parse_args(ctx, args))


app = typer.Typer(
    cls=_DefaultShow,
    help="Where a model or run came from, what depends on a snapshot (`lineage REF`), and what differs "
    "between two lineages (`lineage diff A B`).",
    no_args_is_help=True,
)


@app.command("show")
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
    """Show the lineage of REF as a tree (`labvault lineage REF` is this command): a model version
    -> its run -> the run's snapshots, commit, patch, config, environment, parent run and
    reproductions; a snapshot -> the runs that read it -> the model versions made from them -> the
    aliases pointing at them now.

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


@app.command("diff")
def diff_cmd(
    a: str = typer.Argument(..., help="A model version (project/model@1.2.0 or @alias) or a run (run:<id>)."),
    b: str = typer.Argument(..., help="The other model version or run, compared with A."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """What differs in the lineage of A and B (two model versions, two runs, or one of each): data
    (each dataset's snapshots, with the snapshot diff: files, records, schema, largest PSI), code
    (commit range and files changed, from git when both commits are here), config (keys changed, old
    -> new, from config files and params), environment (Python and packages), seeds, metrics side by
    side.

    Exit codes: 0 shown (whether or not anything differs); 2 bad usage (a snapshot or object ref, a
    version with no source run); 3 A or B not found.
    """
    with open_vault() as vault:
        result = vault.lineage.diff(a, b)
    if json_output:
        print_json(result.to_json())
    else:
        OUTPUT.line(render_diff(result))


def _value(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return _clean(text if len(text) <= 80 else text[:77] + "...")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def render_diff(d: LineageDiff) -> str:
    """The diff as sections; each says ``same`` when nothing in it differs."""
    lines = [" -> ".join(ref if ref == run else f"{ref} ({run})" for ref, run in ((d.a, d.run_a), (d.b, d.run_b)))]
    changed = d.changed
    lines.append("data:" + ("" if d.data else " no input snapshots"))
    for c in d.data:
        head = f"  {_clean(c.dataset)}: {c.a or '-'} -> {c.b or '-'}"
        if not c.changed:
            lines.append(f"{head}: same snapshot")
            continue
        if c.a is None or c.b is None:
            lines.append(f"{head}: {c.verdict}")
            continue
        if c.note:
            lines.append(f"{head}: {_clean(c.note)}")
            continue
        parts = [c.verdict, f"files +{c.files_added} -{c.files_removed} ~{c.files_modified}"]
        if c.records != (None, None):
            parts.append(f"records {_number(c.records[0])} -> {_number(c.records[1])}")
        if c.schema:
            parts.append("schema: " + _clean(", ".join(c.schema)))
        if c.max_psi is not None:
            parts.append(f"largest PSI {c.max_psi:.4g} ({_clean(str(c.max_psi_column))})")
        lines.append(f"{head}: " + "; ".join(parts))
    code = d.code
    if not changed["code"]:
        lines.append(f"code: same commit {code.a[:12] if code.a else '-'}")
    else:
        span = code.range or f"{(code.a or '-')[:12]} (same commit)"
        more = ""
        if code.commits is not None:
            more = f", {code.commits} commit{'s' if code.commits != 1 else ''}"
            if code.commits_back:
                more += f" ({code.commits_back} in A only)"
        files = (
            f", {code.files_changed} file{'s' if code.files_changed != 1 else ''} changed"
            if code.files_changed is not None
            else ""
        )
        lines.append(f"code: {span}{more}{files}")
        lines.extend(f"  {status} {_clean(path)}" for status, path in code.files[:50])
        if len(code.files) > 50:
            lines.append(f"  ... and {len(code.files) - 50} more (--json lists them)")
        if code.patch_a != code.patch_b:
            lines.append(f"  uncommitted changes: {code.patch_a or 'none'} -> {code.patch_b or 'none'}")
        if code.note:
            lines.append(f"  note: {_clean(code.note)}")
    lines.append("config:" + ("" if d.config else " same"))
    lines.extend(f"  {_clean(c.source)}: {_clean(c.key)}: {_value(c.a)} -> {_value(c.b)}" for c in d.config)
    lines.append("environment:" + ("" if d.environment else f" {_clean(d.environment_note or 'same')}"))
    lines.extend(f"  {_clean(p.name)}: {p.a or '-'} -> {p.b or '-'}" for p in d.environment)
    lines.append("seeds:" + ("" if changed["seeds"] else " same"))
    lines.extend(f"  {s.name}: {_value(s.a)} -> {_value(s.b)}" for s in d.seeds if s.changed)
    lines.append("metrics:" + ("" if d.metrics else " none recorded"))
    width = max((len(m.name) for m in d.metrics), default=0)
    for m in d.metrics:
        delta = f"  ({m.delta:+.6g})" if m.delta is not None and m.changed else ""
        lines.append(f"  {_clean(m.name).ljust(width)}  {_number(m.a)} -> {_number(m.b)}{delta}")
    return "\n".join(lines)
