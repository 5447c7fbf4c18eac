"""Lineage both ways over the links labvault already records (docs/lineage.md).

>>> vault.lineage.upstream("fraud/detector@prod")    # version -> run -> snapshots, commit, config, env
>>> vault.lineage.downstream("data:tx@v3")           # snapshot -> runs -> versions -> aliases
>>> vault.lineage.diff("fraud/detector@1.0.0", "fraud/detector@1.1.0")   # data, code, config, env, seeds, metrics

The walk is breadth first, one set-based read per kind of node per level (never one per node), and
each node is expanded once: a run reached again through nesting or a reproduction tag is not walked
again, so the result is finite and acyclic even when tags claim otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from labvault.entities import ModelVersion, Snapshot
from labvault.errors import AmbiguousReference, NotFound, ValidationError
from labvault.refs import DataRef, DigestRef, ModelRef, RunRef, parse_ref
from labvault.services.lineage.diff import DiffSources, LineageDiff, diff_lineage
from labvault.services.lineage.graph import Lineage, LineageEdge, LineageNode
from labvault.services.lineage.walk import Walk, gc_paused
from labvault.storage.meta.repos import lineage as repo
from labvault.storage.meta.store import MetaStore

__all__ = ["DiffSources", "Lineage", "LineageDiff", "LineageEdge", "LineageNode", "LineageService"]

_BARE_RUN = re.compile(r"[0-9a-fA-F]{6,32}")


class LineageService:
    def __init__(
        self,
        *,
        meta: Callable[[], MetaStore],
        resolve_run: Callable[[str], str],
        resolve_data: Callable[[str], Snapshot],
        resolve_model: Callable[[str], ModelVersion],
        diff_sources: Callable[[], DiffSources] | None = None,
    ) -> None:
        self._meta = meta
        self._diff_sources = diff_sources
        self._resolve_run = resolve_run
        self._resolve_data = resolve_data
        self._resolve_model = resolve_model

    def upstream(self, ref: str, *, depth: int | None = None) -> Lineage:
        """Where ``ref`` came from: a version's run, a run's snapshots, commit, patch, config,
        environment, parent run and reproductions; a snapshot's import URL; an object's owners."""
        return self.walk(ref, direction="upstream", depth=depth)

    def downstream(self, ref: str, *, depth: int | None = None) -> Lineage:
        """What depends on ``ref``: a snapshot's readers, a run's versions, nested runs and
        reproductions, a version's aliases."""
        return self.walk(ref, direction="downstream", depth=depth)

    def diff(self, a: str, b: str) -> LineageDiff:
        """What differs in the lineage of ``a`` and ``b`` (model versions or runs): data, code,
        config, environment, seeds and metrics (docs/lineage.md)."""
        if self._diff_sources is None:
            raise ValidationError("this vault cannot compare lineages", hint="open it with labvault.open()")
        return diff_lineage(self._diff_sources(), a, b)

    def default_direction(self, ref: str) -> str:
        """Downstream for a snapshot, upstream for everything else."""
        return "downstream" if ref.strip().startswith("data:") else "upstream"

    def walk(self, ref: str, *, direction: str, depth: int | None = None) -> Lineage:
        if direction not in ("upstream", "downstream"):
            raise ValidationError(f"unknown direction {direction!r}", hint="use upstream or downstream")
        if depth is not None and (isinstance(depth, bool) or depth < 1):
            raise ValidationError(f"--depth must be 1 or more, not {depth}", hint="omit --depth to walk everything")
        walk = Walk(direction)
        root = self._root(ref, walk)
        with self._meta().read() as conn, gc_paused():
            level = 0
            while walk.frontier and (depth is None or level < depth):
                walk.expand(conn)
                level += 1
            return Lineage(
                root=root,
                direction=direction,
                depth=depth,
                nodes=tuple(walk.nodes.values()),
                edges=tuple(walk.edges),
                truncated=bool(walk.frontier),
            )

    def _root(self, text: str, walk: Walk) -> str:
        text = text.strip() if isinstance(text, str) else text
        parsed = RunRef(text.lower()) if isinstance(text, str) and _BARE_RUN.fullmatch(text) else parse_ref(text)
        if isinstance(parsed, RunRef):
            run_id = self._resolve_run(str(parsed))
            return walk.add_run(run_id)
        if isinstance(parsed, DataRef):
            snapshot = self._resolve_data(str(parsed))
            return walk.add_snapshot(snapshot.ref)
        if isinstance(parsed, ModelRef):
            version = self._resolve_model(str(parsed))
            root = walk.add_version(version.ref, marks=("archived",) if version.archived_at else ())
            if parsed.is_alias:
                alias = f"{version.name}@{parsed.version}"
                walk.add(LineageNode(id=alias, ref=alias, kind="alias"))
                walk.link(root, alias, "alias")
            walk.pending_versions[root] = (version.run_id, version.archived_at is not None)
            return root
        if not isinstance(parsed, DigestRef):  # parse_ref knows no other kind of reference
            raise ValidationError(
                f"cannot show the lineage of {text!r}", hint="give a run, a snapshot, a model or an object"
            )
        with self._meta().read() as conn:
            owners = repo.object_owners(conn, parsed.prefix)
        if not owners:
            raise NotFound(f"no record points at {parsed}", hint="check the hash with `labvault object cat`")
        if len(owners) > 1:
            raise AmbiguousReference(str(parsed), [f"sha256:{d}" for d in sorted(owners)])
        digest, refs = next(iter(owners.items()))
        root = f"sha256:{digest}"
        walk.add(LineageNode(id=digest, ref=root, kind="object", label=digest[:12]))
        walk.object_owners = (root, refs)
        walk.frontier = True
        return root
