"""The stage graph of a pipeline: which stage reads which stage's outputs.

An edge runs from the stage that writes a path to every stage whose deps name that path, a folder
holding it, or a path inside it (outs -> deps, as in DVC). Building the graph refuses what would make
it ambiguous or endless: an output written by two stages, an output nested in another, a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labvault.errors import ValidationError

if TYPE_CHECKING:
    from labvault.services.pipelines.spec import Stage

__all__ = ["build_graph", "output_indexes"]


def output_indexes(stages: dict[str, Stage]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(output -> stage, folder -> stages with an output below it): lookups in O(path depth)."""
    owner: dict[str, str] = {}
    below: dict[str, list[str]] = {}
    for name, stage in stages.items():
        for out in stage.outs:
            owner.setdefault(out, name)
            parent = out.rpartition("/")[0]
            while parent:
                seen = below.setdefault(parent, [])
                if not seen or seen[-1] != name:
                    seen.append(name)
                parent = parent.rpartition("/")[0]
    return owner, below


def build_graph(stages: dict[str, Stage]) -> dict[str, tuple[str, ...]]:
    """stage -> the stages it depends on; refuses duplicate or nested outputs and cycles (exit 2)."""
    owner: dict[str, str] = {}
    for name, stage in stages.items():
        for out in stage.outs:
            if out in owner:
                other = owner[out]
                raise ValidationError(
                    f"stages {other} and {name} both write {out}"
                    if other != name
                    else f"stage {name} lists {out} twice",
                    hint="give every output one stage that writes it",
                )
            owner[out] = name
    for out in sorted(owner):
        parent = out.rpartition("/")[0]
        while parent:
            if parent in owner:
                raise ValidationError(
                    f"output {out} of stage {owner[out]} is inside output {parent} of stage {owner[parent]}",
                    hint="an output folder belongs to one stage; write to a sibling path instead",
                )
            parent = parent.rpartition("/")[0]
    below = output_indexes(stages)[1]
    upstream: dict[str, tuple[str, ...]] = {}
    for name, stage in stages.items():
        ups: dict[str, None] = {}
        for dep in stage.deps:
            if dep.startswith("data:"):
                continue
            probe = dep
            while probe:  # the dep is an output, or inside one
                if probe in owner:
                    ups[owner[probe]] = None
                    break
                probe = probe.rpartition("/")[0]
            for who in below.get(dep, ()):  # an output inside a folder the stage reads
                ups[who] = None
        upstream[name] = tuple(ups)
    _refuse_cycles(upstream)
    return upstream


def _refuse_cycles(upstream: dict[str, tuple[str, ...]]) -> None:
    state: dict[str, int] = {}
    for start in upstream:
        if state.get(start):
            continue
        path: list[str] = [start]
        iters = [iter(upstream[start])]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
                continue
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise ValidationError(
                    "the stages form a cycle: " + " -> ".join(reversed(cycle)),
                    hint="a stage cannot depend, directly or not, on its own outputs",
                )
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(upstream[nxt]))
