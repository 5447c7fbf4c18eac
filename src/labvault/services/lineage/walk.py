"""One lineage walk in progress: the nodes and edges found so far, the frontier still to expand, and
the set-based reads (one per kind of node per level) that expand it, upstream or downstream.

``LineageService.walk`` starts a :class:`Walk` at the resolved root and calls :meth:`Walk.expand`
once per level; the walk refuses edges that would close a loop of runs, so the graph stays acyclic.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from labvault.services.lineage.graph import LineageEdge, LineageNode
from labvault.storage.meta.repos import lineage as repo
from labvault.storage.meta.repos import pipelines as pipeline_repo

__all__ = ["Walk", "gc_paused"]

_DATA = re.compile(r"data:(.+)@v([0-9]{1,19})")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
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
class Walk:
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
