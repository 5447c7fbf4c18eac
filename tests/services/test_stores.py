"""One vault over each object store: the services see only the object-store protocol."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.memory import MemoryObjectStore
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.remote import FsspecObjectStore
from labvault.vault import Vault
from tests.s3server import S3Server

STORES: dict[str, Callable[[Path], ObjectStore]] = {
    "local": lambda vault_dir: LocalObjectStore(vault_dir),
    "memory": lambda _: MemoryObjectStore(),
    "fsspec": lambda _: FsspecObjectStore(f"memory://labvault-{secrets.token_hex(4)}"),
    "s3-cached": lambda _: MemoryObjectStore(),  # replaced in the fixture: needs the s3_server process
}


@pytest.fixture(params=sorted(STORES))
def store_vault(request: pytest.FixtureRequest, project: Path) -> Iterator[tuple[Vault, ObjectStore]]:
    made, _ = Vault.init(project)
    made.close()
    store = STORES[request.param](made.dir)
    if request.param == "s3-cached":
        server: S3Server = request.getfixturevalue("s3_server")
        store = FsspecObjectStore(
            f"s3://{server.bucket()}/team",
            cache_dir=made.dir / "cache" / "objects",
            cache_size=1 << 30,
            **server.storage_options(),
        )
    with Vault.open(project, objects=store) as v:
        yield v, store


def test_a_snapshot_a_run_and_a_registration_go_through_any_store(
    store_vault: tuple[Vault, ObjectStore], project: Path
) -> None:
    vault, store = store_vault
    assert vault.objects is store
    (project / "data").mkdir()
    (project / "data" / "train.csv").write_text("id,score\n1,0.5\n2,1.5\n")
    snapshot, created = vault.data.add("train", project / "data")
    assert created
    assert store.has(snapshot.content_hash)

    model = project / "model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"weights")
    (model / "sub" / "config.txt").write_text("layers: 3\n")
    run = vault.runs.create(project="fraud", inputs=[str(snapshot.ref)], capture=False)
    vault.runs.log_metrics(run.id, [("auc", 0.9, 0)])
    artifact = vault.runs.log_artifact(run.id, model, name="model")
    vault.runs.finish(run.id)
    assert store.has(artifact.digest)
    vault.runs.delete(run.ref)
    assert vault.runs.restore(run.ref).deleted is False

    version, created = vault.registry.register("fraud/detector", run=run.ref, artifact="model")
    assert created
    assert store.has(version.tree)
    out = project / "out"
    _, target = vault.registry.materialize(version.ref, out)
    assert (target / "weights.bin").read_bytes() == b"weights"
    assert vault.data.checkout(str(snapshot.ref), project / "copy")

    report = vault.maintenance.fsck()
    assert report.clean, report
    assert report.checked == sum(1 for _ in store.iter_objects())
    assert vault.maintenance.gc(grace=0).kept_referenced == report.checked
    assert vault.maintenance.fsck().clean
    if not isinstance(store, LocalObjectStore):
        # Nothing leaked into the vault folder's own object store.
        assert not any(LocalObjectStore(vault.dir).iter_objects())
