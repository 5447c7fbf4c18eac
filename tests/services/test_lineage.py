"""Lineage both ways, on SQLite and PostgreSQL: versions -> runs -> snapshots and back."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from labvault import Vault
from labvault.errors import AmbiguousReference, NotFound, ValidationError
from labvault.services.lineage import Lineage
from labvault.storage.meta.tables import data_snapshots, object_refs, runs


def _snapshot(vault: Vault, project: Path, name: str, text: str) -> str:
    (project / name).mkdir(exist_ok=True)
    (project / name / "rows.csv").write_text(text)
    snap, _ = vault.data.add(name, project / name)
    return snap.ref


def _train(
    vault: Vault, project: Path, inputs: list[str], *, parent: str | None = None, tags: dict[str, str] | None = None
) -> str:
    run = vault.runs.create(
        name="train", inputs=inputs, parent_id=parent, tags=tags, capture=False, background_git=False
    )
    folder = project / f"model-{run.id}"
    folder.mkdir()
    (folder / "model.bin").write_bytes(run.id.encode())
    vault.runs.log_artifact(run.id, folder, name="model")
    vault.runs.finish(run.id)
    return run.id


def _edges(lineage: Lineage) -> set[tuple[str, str, str]]:
    return {(e.source, e.target, e.kind) for e in lineage.edges}


@pytest.fixture
def shop(any_vault: Vault, project: Path) -> dict[str, str]:
    """tx@v1 read by two runs; the first made fraud/detector@0.1.0 (prod), the second 0.2.0 (archived)."""
    vault = any_vault
    tx = _snapshot(vault, project, "tx", "a,b\n1,2\n")
    other = _snapshot(vault, project, "other", "c\n3\n")
    first = _train(vault, project, [tx, other])
    second = _train(vault, project, [tx])
    v1, _ = vault.registry.register("fraud/detector", run=f"run:{first}", artifact="model")
    v2, _ = vault.registry.register("fraud/detector", run=f"run:{second}", artifact="model")
    vault.registry.promote(v1.ref, "prod")
    vault.registry.archive(v2.ref)
    return {"tx": tx, "other": other, "first": first, "second": second, "v1": v1.ref, "v2": v2.ref}


def test_upstream_of_a_model_version_reaches_its_run_and_snapshots(any_vault: Vault, shop: dict[str, str]) -> None:
    up = any_vault.lineage.upstream("fraud/detector@prod")
    assert up.root == shop["v1"]
    assert up.direction == "upstream"
    run = f"run:{shop['first']}"
    assert {
        (run, shop["v1"], "registered"),
        (shop["tx"], run, "input"),
        (shop["other"], run, "input"),
        (shop["v1"], "fraud/detector@prod", "alias"),
    } <= _edges(up)
    assert f"run:{shop['second']}" not in {n.ref for n in up.nodes}
    doc = up.to_json()
    assert {"id", "ref", "kind", "label", "marks"} <= set(doc["nodes"][0])
    assert set(doc["edges"][0]) == {"from", "to", "kind"}
    assert up.node(run).id == shop["first"]


def test_downstream_of_a_snapshot_reaches_runs_versions_and_aliases(any_vault: Vault, shop: dict[str, str]) -> None:
    down = any_vault.lineage.downstream(shop["tx"])
    first, second = f"run:{shop['first']}", f"run:{shop['second']}"
    assert {
        (shop["tx"], first, "input"),
        (shop["tx"], second, "input"),
        (first, shop["v1"], "registered"),
        (second, shop["v2"], "registered"),
        (shop["v1"], "fraud/detector@prod", "alias"),
    } <= _edges(down)
    assert "archived" in down.node(shop["v2"]).marks
    assert "archived" not in down.node(shop["v1"]).marks
    # The other snapshot is upstream of the first run, not downstream of tx.
    assert shop["other"] not in {n.ref for n in down.nodes}


def test_depth_limits_the_walk_and_says_so(any_vault: Vault, shop: dict[str, str]) -> None:
    one = any_vault.lineage.downstream(shop["tx"], depth=1)
    assert {n.kind for n in one.nodes} == {"snapshot", "run"}
    assert one.truncated
    full = any_vault.lineage.downstream(shop["tx"])
    assert not full.truncated
    for bad in (0, -1):
        with pytest.raises(ValidationError, match="--depth"):
            any_vault.lineage.downstream(shop["tx"], depth=bad)


def test_a_run_whose_snapshot_is_gone_is_shown_marked(any_vault: Vault, shop: dict[str, str]) -> None:
    # As after pulling a run without its data: the run names a snapshot this vault does not hold.
    with any_vault.meta.transaction() as conn:
        conn.execute(sa.delete(data_snapshots).where(data_snapshots.c.name == "other"))
    up = any_vault.lineage.upstream(f"run:{shop['first']}")
    assert "deleted" in up.node(shop["other"]).marks
    assert "deleted" not in up.node(shop["tx"]).marks


def test_nesting_and_reproductions_are_walked_without_cycles(any_vault: Vault, project: Path) -> None:
    vault = any_vault
    tx = _snapshot(vault, project, "tx", "a\n1\n")
    parent = vault.runs.create(name="sweep", inputs=[tx], capture=False, background_git=False).id
    child = vault.runs.create(name="trial", parent_id=parent, capture=False, background_git=False).id
    # Tags are the user's: a run claiming to reproduce its own child, and the child itself, make no cycle.
    vault.runs.set_tags(parent, {"reproduces": f"run:{child}"})
    vault.runs.set_tags(child, {"reproduces": f"run:{child}"})
    vault.runs.finish(child)
    vault.runs.finish(parent)
    rerun = _train(vault, project, [tx], tags={"reproduces": f"run:{parent}", "reproduce_verdict": "reproduced"})
    up = vault.lineage.upstream(f"run:{child}")
    assert (f"run:{parent}", f"run:{child}", "parent") in _edges(up)
    assert (tx, f"run:{parent}", "input") in _edges(up)
    assert (f"run:{parent}", f"run:{rerun}", "reproduced_by") in _edges(up)
    assert "reproduced" in up.node(f"run:{rerun}").marks
    down = vault.lineage.downstream(f"run:{parent}")
    for lineage in (up, down):
        assert all(e.source != e.target for e in lineage.edges)
        assert len({n.ref for n in lineage.nodes}) == len(lineage.nodes)


def test_an_object_ref_gives_its_owners(any_vault: Vault, shop: dict[str, str]) -> None:
    snap = any_vault.data.resolve(shop["tx"])
    up = any_vault.lineage.upstream(f"sha256:{snap.content_hash.hex[:10]}")
    assert up.root == str(snap.content_hash)
    assert (str(snap.content_hash), shop["tx"], "stored_in") in _edges(up)
    with pytest.raises(NotFound):
        any_vault.lineage.upstream("sha256:" + "0" * 64)


def test_unknown_refs_are_not_found(any_vault: Vault, shop: dict[str, str]) -> None:
    for ref in ("run:abcdef123456", "data:nope@v1", "fraud/detector@9.9.9", "fraud/detector@canary"):
        with pytest.raises(NotFound):
            any_vault.lineage.upstream(ref)


def test_a_snapshot_read_by_most_of_1000_runs(vault: Vault, project: Path) -> None:
    """Both directions on a vault of 1,000 runs and 200 versions, a snapshot read by 900 of them."""
    hot = _snapshot(vault, project, "hot", "a\n1\n")
    cold = _snapshot(vault, project, "cold", "b\n2\n")
    ids = []
    for i in range(1000):
        run = vault.runs.create(name="sweep", inputs=[hot if i % 10 else cold], capture=False, background_git=False)
        ids.append(run.id)
    # 200 versions from the first 200 runs: each registered from the run's record without an artifact copy.
    model = project / "m"
    model.mkdir()
    for i, run_id in enumerate(ids[:200]):
        (model / "w.bin").write_bytes(str(i).encode())
        vault.registry.register("shop/ranker", model, run=f"run:{run_id}", version=f"0.{i}.0")
    started = time.perf_counter()
    down = vault.lineage.downstream(hot)
    took = time.perf_counter() - started
    runs = [n for n in down.nodes if n.kind == "run"]
    versions = [n for n in down.nodes if n.kind == "model_version"]
    assert len(runs) == 900
    assert len(versions) == 180
    assert took < 5  # the benchmark holds the real target; this only catches a per-node query
    up = vault.lineage.upstream("shop/ranker@0.1.0")
    assert (hot, f"run:{ids[1]}", "input") in _edges(up)


def test_readers_match_whole_references_only(any_vault: Vault, project: Path) -> None:
    vault = any_vault
    tx = _snapshot(vault, project, "tx", "a\n1\n")
    reader = _train(vault, project, [tx])
    decoy = _train(vault, project, [])
    lookalike = _train(vault, project, [])
    # Rows are untrusted (pulled from elsewhere): neither a longer version nor a quoted string
    # holding the reference is a read of it.
    with vault.meta.transaction() as conn:
        conn.execute(sa.update(runs).where(runs.c.id == decoy).values(inputs=json.dumps([f'x"{tx}'])))
        conn.execute(sa.update(runs).where(runs.c.id == lookalike).values(inputs=json.dumps([f"{tx}0"])))
    down = vault.lineage.downstream(tx, depth=1)
    assert {n.ref for n in down.nodes if n.kind == "run"} == {f"run:{reader}"}


def test_archived_versions_and_deleted_runs_are_marked(any_vault: Vault, shop: dict[str, str]) -> None:
    up = any_vault.lineage.upstream(shop["v2"])
    assert "archived" in up.node(shop["v2"]).marks
    assert (f"run:{shop['second']}", shop["v2"], "registered") in _edges(up)
    any_vault.runs.delete(shop["second"])
    by_bare_id = any_vault.lineage.upstream(shop["second"])
    assert "deleted" in by_bare_id.node(f"run:{shop['second']}").marks
    # A deleted run no longer counts as a reader of its snapshot.
    down = any_vault.lineage.downstream(shop["tx"])
    assert f"run:{shop['second']}" not in {n.ref for n in down.nodes}


def test_an_ambiguous_object_prefix_is_refused(vault: Vault, project: Path) -> None:
    # Two owned objects sharing 8 leading hex digits: recorded directly, as nothing real makes them.
    tx = _snapshot(vault, project, "tx", "a\n1\n")
    now = datetime.now(UTC)
    with vault.meta.transaction() as conn:
        conn.execute(
            sa.insert(object_refs),
            [{"owner": tx, "digest": "abcdef01" + c * 56, "kind": "blob", "created_at": now} for c in "01"],
        )
    with pytest.raises(AmbiguousReference):
        vault.lineage.upstream("sha256:abcdef01")
    assert vault.lineage.upstream("sha256:abcdef010").root == "sha256:abcdef01" + "0" * 56


def test_an_imported_snapshot_leads_up_to_its_source(any_vault: Vault, project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "rows.csv").write_text("a\n1\n")
    snap, _ = any_vault.data.import_("ext", str(outside))
    run = _train(any_vault, project, [snap.ref])
    up = any_vault.lineage.upstream(f"run:{run}")
    assert snap.source_url is not None
    assert snap.source_url.startswith("file://")
    assert (snap.source_url, snap.ref, "imported_from") in _edges(up)
    assert up.node(snap.source_url).kind == "import"


def _acyclic(lineage: Lineage) -> bool:
    """Kahn's algorithm over the edges: every node can be removed in order only if there is no cycle."""
    into: dict[str, int] = {n.ref: 0 for n in lineage.nodes}
    out: dict[str, list[str]] = {}
    for e in lineage.edges:
        into[e.target] += 1
        out.setdefault(e.source, []).append(e.target)
    ready = [ref for ref, n in into.items() if n == 0]
    removed = 0
    while ready:
        ref = ready.pop()
        removed += 1
        for target in out.get(ref, ()):
            into[target] -= 1
            if into[target] == 0:
                ready.append(target)
    return removed == len(into)


def test_a_run_is_never_its_own_ancestor_through_reproduction_tags(any_vault: Vault, project: Path) -> None:
    vault = any_vault
    parent = vault.runs.create(name="sweep", capture=False, background_git=False).id
    child = vault.runs.create(name="trial", parent_id=parent, capture=False, background_git=False).id
    other = _train(vault, project, [], tags={"reproduces": f"run:{child}"})
    # The tags claim the parent reproduces its own child, and the child reproduces the third run.
    vault.runs.set_tags(parent, {"reproduces": f"run:{child}"})
    vault.runs.set_tags(child, {"reproduces": f"run:{other}"})
    for ref in (parent, child, other):
        for lineage in (vault.lineage.upstream(f"run:{ref}"), vault.lineage.downstream(f"run:{ref}")):
            assert _acyclic(lineage), (ref, lineage.direction, _edges(lineage))
    up = vault.lineage.upstream(f"run:{child}")
    assert (f"run:{parent}", f"run:{child}", "parent") in _edges(up)
    assert "cycle" in up.node(f"run:{parent}").marks  # the claim that closes the loop is dropped, and marked


def test_a_run_is_never_its_own_ancestor_through_nesting(any_vault: Vault, project: Path) -> None:
    # Records pulled from elsewhere may name each other as parents: a -> b -> c -> a.
    vault = any_vault
    ids = [vault.runs.create(name=f"r{i}", capture=False, background_git=False).id for i in range(3)]
    with vault.meta.transaction() as conn:
        for i, run_id in enumerate(ids):
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(parent_id=ids[(i + 1) % 3]))
    for run_id in ids:
        for lineage in (vault.lineage.upstream(f"run:{run_id}"), vault.lineage.downstream(f"run:{run_id}")):
            assert _acyclic(lineage), (run_id, lineage.direction, _edges(lineage))
            assert {n.ref for n in lineage.nodes} == {f"run:{i}" for i in ids}
