"""Lineage both ways over the links labvault already records (docs/lineage.md).

>>> vault.lineage.upstream("fraud/detector@prod")    # version -> run -> snapshots, commit, config, env
>>> vault.lineage.downstream("data:tx@v3")           # snapshot -> runs -> versions -> aliases
>>> vault.lineage.diff("fraud/detector@1.0.0", "fraud/detector@1.1.0")   # data, code, config, env, seeds, metrics

The walk is breadth first, one set-based read per kind of node per level (never one per node), and
each node is expanded once: a run reached again through nesting or a reproduction tag is not walked
again, so the result is finite and acyclic even when tags claim otherwise.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from labvault.entities import ModelVersion, Snapshot
from labvault.errors import AmbiguousReference, NotFound, ValidationError
from labvault.refs import DataRef, DigestRef, ModelRef, RunRef, parse_ref
from labvault.services.lineage.diff import DiffSources, LineageDiff, diff_lineage
from labvault.services.lineage.graph import Lineage, LineageEdge, LineageNode
from labvault.storage.meta.repos import lineage as repo
from labvault.storage.meta.repos import pipelines as pipeline_repo
from labvault.storage.meta.store import MetaStore

__all__ = ["DiffSources", "Lineage", "LineageDiff", "LineageEdge", "LineageNode", "LineageService"]

_BARE_RUN = re.compile(r"[0-9a-fA-F]{6,32}")
_DATA = re.compile(r"data:(.+)@v([0-9]{1,19})")


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
        walk = _Walk(direction)
        root = self._root(ref, walk)
        with self._meta().read() as conn, _gc_paused():
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

    def _root(self, text: str, walk: _Walk) -> str:
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


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold the cyclic collector while a walk builds its (acyclic) graph: 180,000 new tuples for a
    snapshot read by 90,000 runs would trigger collections that rescan every one of them, which
    doubles the walk's time. Reference counting still frees everything as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class _Walk:
    direction: str
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    edges: list[LineageEdge] = field(default_factory=list)
    runs: set[str] = field(default_factory=set)
    snapshots: set[str] = field(default_factory=set)
    versions: dict[str, int | None] = field(default_factory=dict)  # ref -> registry id (None: not known yet)
    pending_versions: dict[str, tuple[str | None, bool]] = field(default_factory=dict)
    object_owners: tuple[str, list[str]] | None = None
    expanded: set[str] = field(default_factory=set)  # snapshot and version refs walked already
    expanded_runs: set[str] = field(default_factory=set)  # run ids walked already
    _edge_keys: set[tuple[str, str, str]] = field(default_factory=set)
    # run ref -> the run refs it links to (parent -> nested, original -> rerun, input run -> reader):
    # the only edges that can close a loop, since every other kind joins nodes of different kinds in
    # one fixed order (snapshot -> run -> version -> alias).
    _run_edges: dict[str, list[str]] = field(default_factory=dict)
    frontier: bool = True
    # run ref -> (definition hex, recorded tag or None): the pipeline version a pipeline run ran
    _pipelines: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    # -- building ---------------------------------------------------------------------------------
    def add(self, node: LineageNode) -> str:
        if node.ref not in self.nodes:
            self.nodes[node.ref] = node
        return node.ref

    def link(self, source: str, target: str, kind: str) -> bool:
        """Add the edge; False when it is a self-link, known already, or would close a loop of runs
        (records pulled from elsewhere and user tags can claim one): then ``target`` is marked."""
        if source == target or (source, target, kind) in self._edge_keys:
            return False
        if source.startswith("run:") and target.startswith("run:"):
            if self._reaches(target, source):
                self._mark(target, "cycle")
                return False
            self._run_edges.setdefault(source, []).append(target)
        self._edge_keys.add((source, target, kind))
        self.edges.append(LineageEdge(source, target, kind))
        return True

    def _reaches(self, start: str, goal: str) -> bool:
        """Whether the run edges lead from ``start`` to ``goal`` (iteratively: chains can be long)."""
        seen, stack = {start}, [start]
        while stack:
            for nxt in self._run_edges.get(stack.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    def add_run(self, run_id: str, *, marks: tuple[str, ...] = (), walk: bool = True) -> str:
        ref = f"run:{run_id}"
        self.add(LineageNode(id=run_id, ref=ref, kind="run", marks=marks))
        if walk and run_id not in self.expanded_runs:
            self.runs.add(run_id)
        return ref

    def fan_out(self, source: str, kind: str, run_ids: list[str]) -> None:
        """``source`` -> each run, as :meth:`add_run` and :meth:`link` would, inlined: the one path
        that meets 90,000 runs at once (every reader of a snapshot). Each source is expanded once, so
        its edges are new and need no duplicate check."""
        nodes, edges, runs, walked = self.nodes, self.edges, self.runs, self.expanded_runs
        # tuple.__new__ straight: the named tuples' own __new__ is a Python call per object.
        new, node_type, edge_type = tuple.__new__, LineageNode, LineageEdge
        for run_id in run_ids:
            ref = "run:" + run_id
            if ref not in nodes:
                nodes[ref] = new(node_type, (run_id, ref, "run", "", ()))
                if run_id not in walked:
                    runs.add(run_id)
            edges.append(new(edge_type, (source, ref, kind)))

    def add_snapshot(self, ref: str) -> str:
        self.add(LineageNode(id=ref[5:], ref=ref, kind="snapshot"))
        if ref not in self.expanded:
            self.snapshots.add(ref)
        return ref

    def add_version(self, ref: str, *, marks: tuple[str, ...] = (), version_id: int | None = None) -> str:
        self.add(LineageNode(id=ref, ref=ref, kind="model_version", marks=marks))
        if ref not in self.expanded:
            self.versions[ref] = version_id
        return ref

    def _mark(self, ref: str, *marks: str) -> None:
        node = self.nodes[ref]
        new = tuple(m for m in marks if m not in node.marks)
        if new:
            self.nodes[ref] = LineageNode(node.id, node.ref, node.kind, node.label, node.marks + new)

    # -- one level ------------------------------------------------------------------------------
    def expand(self, conn: Any) -> None:
        runs, snapshots, versions = self.runs, self.snapshots, self.versions
        self.runs, self.snapshots, self.versions = set(), set(), {}
        self.expanded_runs.update(runs)
        self.expanded.update(snapshots)
        self.expanded.update(versions)
        owners, self.object_owners = self.object_owners, None
        if owners is not None:
            self._owners(*owners)
        if self.direction == "upstream":
            self._runs_up(conn, runs)
            self._snapshots_up(conn, snapshots)
            self._versions_up(conn, versions)
        else:
            self._runs_down(conn, runs)
            self._snapshots_down(conn, snapshots)
            self._versions_down(conn, versions)
        self.frontier = bool(self.runs or self.snapshots or self.versions)

    def _owners(self, root: str, owners: list[str]) -> None:
        for owner in owners:
            if owner.startswith("run:"):
                ref = self.add_run(owner[4:])
            elif owner.startswith("data:"):
                ref = self.add_snapshot(owner)
            else:
                ref = self.add_version(owner)
            self.link(root, ref, "stored_in")

    def _runs_up(self, conn: Any, ids: set[str]) -> None:
        if not ids:
            return
        links = repo.run_links(conn, ids)
        for run_id in sorted(ids):
            ref = f"run:{run_id}"
            found = links.get(run_id)
            if found is None:
                self._mark(ref, "missing")
                continue
            self._mark(
                ref, *(("deleted",) if found.deleted else ()), *(() if found.status == "finished" else (found.status,))
            )
            self.nodes[ref] = LineageNode(run_id, ref, "run", f"{found.project}/{found.name}", self.nodes[ref].marks)
            for text in found.inputs:
                if _DATA.fullmatch(text):
                    source = self.add_snapshot(text)
                elif text.startswith("run:"):
                    source = self.add_run(text[4:])
                else:
                    source = self.add(LineageNode(id=text, ref=text, kind="input"))
                self.link(source, ref, "input")
            self._capture(ref, found.capture)
            if found.parent_id:
                self.link(self.add_run(found.parent_id), ref, "parent")
        self._pipeline_versions(conn)
        self._reproductions(conn, ids, walk=False)

    def _pipeline_versions(self, conn: Any) -> None:
        """``pipeline:NAME`` -> run for every tag made from the definition the run ran (a tag made later
        too); the bare definition when no tag has it."""
        pending, self._pipelines = self._pipelines, {}
        if not pending:
            return
        named = pipeline_repo.tags_by_definition(conn, [d for d, _t in pending.values()])
        for ref, (definition, recorded) in sorted(pending.items()):
            names = [f"pipeline:{n}" for n in named.get(definition, [])]
            if recorded and recorded not in names:
                names.append(recorded)  # a tag pulled from elsewhere, or deleted since
            for name in names:
                self.link(self.add(LineageNode(name, name, "pipeline", name)), ref, "pipeline")
            if not names:
                digest = f"sha256:{definition}"
                node = LineageNode(definition, digest, "pipeline", "pipeline definition (untagged)")
                self.link(self.add(node), ref, "pipeline")

    def _capture(self, ref: str, capture: dict[str, Any]) -> None:
        git = capture.get("git")
        commit = git.get("commit") if isinstance(git, dict) else None
        if isinstance(commit, str) and commit:
            self.link(self.add(LineageNode(commit, f"commit:{commit}", "commit", commit[:12])), ref, "code")
        patch = capture.get("patch")
        if isinstance(patch, str) and patch.startswith("sha256:"):
            self.link(self.add(LineageNode(patch[7:], patch, "patch", "uncommitted changes")), ref, "patch")
        configs = capture.get("config")
        for item in configs if isinstance(configs, list) else []:
            sha = item.get("sha256") if isinstance(item, dict) else None
            if isinstance(sha, str) and sha.startswith("sha256:"):
                node = LineageNode(sha[7:], sha, "config", str(item.get("path", "")))
                self.link(self.add(node), ref, "config")
        version = capture.get("pipeline_version")
        definition = version.get("definition") if isinstance(version, dict) else None
        if isinstance(definition, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", definition):
            tag = version.get("tag") if isinstance(version, dict) else None
            recorded = tag if isinstance(tag, str) and tag.startswith("pipeline:") else None
            self._pipelines[ref] = (definition[7:], recorded)
        env = capture.get("environment")
        if isinstance(env, str) and env.startswith("sha256:"):
            node = LineageNode(env[7:], env, "environment")
            self.link(self.add(node), ref, "environment")

    def _reproductions(self, conn: Any, ids: set[str], *, walk: bool) -> None:
        for run_id, reruns in sorted(repo.reproductions_of(conn, ids).items()):
            for rerun, verdict in reruns:
                known = f"run:{rerun}" in self.nodes
                rerun_ref = self.add_run(rerun, walk=walk)
                if self.link(f"run:{run_id}", rerun_ref, "reproduced_by") or not known:
                    self._mark(rerun_ref, verdict or "no verdict")

    def _snapshots_up(self, conn: Any, refs: set[str]) -> None:
        keys = {}
        for ref in refs:
            match = _DATA.fullmatch(ref)
            if match:
                keys[(match.group(1), int(match.group(2)))] = ref
        found = repo.existing_snapshots(conn, set(keys)) if keys else {}
        for key, ref in sorted(keys.items()):
            if key not in found:
                self._mark(ref, "deleted")
            elif found[key]:
                url = str(found[key])
                self.link(self.add(LineageNode(url, url, "import", url)), ref, "imported_from")

    def _versions_up(self, conn: Any, versions: dict[str, int | None]) -> None:
        unknown = [ref for ref in versions if ref not in self.pending_versions]
        named = repo.versions_named(conn, set(unknown)) if unknown else {}
        for ref in sorted(versions):
            run_id, _ = self.pending_versions.pop(ref, (None, False))
            if ref in named:
                run_id = named[ref].run_id
                if named[ref].archived_at:
                    self._mark(ref, "archived")
            if run_id:
                self.link(self.add_run(run_id), ref, "registered")

    def _runs_down(self, conn: Any, ids: set[str]) -> None:
        if not ids:
            return
        for run_id, made in sorted(repo.versions_from(conn, ids).items()):
            for version in made:
                marks = ("archived",) if version.archived_at else ()
                vref = self.add_version(version.ref, marks=marks, version_id=version.id)
                self.link(f"run:{run_id}", vref, "registered")
        for parent, kids in sorted(repo.children_of(conn, ids).items()):
            for kid in kids:
                self.link(f"run:{parent}", self.add_run(kid), "parent")
        self._reproductions(conn, ids, walk=True)

    def _snapshots_down(self, conn: Any, refs: set[str]) -> None:
        if not refs:
            return
        for ref, readers in sorted(repo.readers_of(conn, refs).items()):
            self.fan_out(ref, "input", readers)

    def _versions_down(self, conn: Any, versions: dict[str, int | None]) -> None:
        unknown = [ref for ref, vid in versions.items() if vid is None]
        ids = {ref: vid for ref, vid in versions.items() if vid is not None}
        if unknown:
            ids.update({ref: v.id for ref, v in repo.versions_named(conn, set(unknown)).items()})
        by_id = {vid: ref for ref, vid in ids.items()}
        for vid, names in sorted(repo.aliases_on(conn, set(by_id)).items()):
            vref = by_id[vid]
            model = vref.rsplit("@", 1)[0]
            for name in names:
                alias = f"{model}@{name}"
                self.add(LineageNode(id=alias, ref=alias, kind="alias"))
                self.link(vref, alias, "alias")
