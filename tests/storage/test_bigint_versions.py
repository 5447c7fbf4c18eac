"""Version numbers are 64-bit where they are stored, on SQLite and on PostgreSQL alike.

Model versions accept each part up to 2^63-1 and data versions up to v(2^63-1) (``refs.MAX_VERSION_PART``);
PostgreSQL's INTEGER stops at 2^31-1, so the columns that hold them are BIGINT there (migration
``0006_bigint_versions``). SQLite's integers are 64-bit already.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from labvault.errors import StorageError, ValidationError
from labvault.refs import MAX_VERSION_PART
from labvault.storage.meta.tables import data_snapshots
from labvault.vault import Vault
from tests.older_schema import empty_metadata, ship_migrations_before

TOP = MAX_VERSION_PART  # 9223372036854775807
ABOVE_32_BITS = 2**31  # 2147483648


def _model(root: Path, weights: bytes) -> Path:
    folder = root / "model"
    folder.mkdir(exist_ok=True)
    (folder / "model.bin").write_bytes(weights)
    return folder


def test_model_versions_with_64_bit_parts_register_resolve_sort_and_round_trip(any_vault: Vault, project: Path) -> None:
    reg = any_vault.registry
    reg.register("fraud/detector@1.0.0", _model(project, b"small"))
    reg.register(f"fraud/detector@{TOP}.0.0", _model(project, b"top"))
    reg.register(f"fraud/detector@{ABOVE_32_BITS}.0.0", _model(project, b"above"))
    bumped, _ = reg.register("fraud/detector", _model(project, b"bumped"))  # the next patch of the highest
    assert bumped.version == f"{TOP}.0.1"
    widest = f"{TOP}.{TOP}.{TOP}"
    reg.register(f"fraud/detector@{widest}", _model(project, b"widest"))
    assert [v.version for v in reg.versions("fraud/detector")] == [
        "1.0.0",
        f"{ABOVE_32_BITS}.0.0",
        f"{TOP}.0.0",
        f"{TOP}.0.1",
        widest,
    ]
    for version in (f"{ABOVE_32_BITS}.0.0", f"{TOP}.0.0", widest):
        assert reg.resolve(f"fraud/detector@{version}").version == version
    assert [m.latest for m in reg.models()] == [widest]
    _, target = reg.materialize(f"fraud/detector@{TOP}.0.0", project / "out")
    assert target == project / "out" / "fraud" / "detector" / f"{TOP}.0.0"
    assert (target / "model.bin").read_bytes() == b"top"
    # the same content again under the same version is a no-op: the stored row compares equal
    again, created = reg.register(f"fraud/detector@{TOP}.0.0", _model(project, b"top"))
    assert (again.version, created) == (f"{TOP}.0.0", False)


def test_the_longest_names_with_the_widest_version_are_stored(any_vault: Vault, project: Path) -> None:
    """``project/model@X.Y.Z`` (317 characters) is an object owner and an audit subject; with an alias, 386."""
    name = f"{'p' * 128}/{'m' * 128}"
    widest = f"{TOP}.{TOP}.{TOP}"
    version, _ = any_vault.registry.register(f"{name}@{widest}", _model(project, b"w"))
    assert version.ref == f"{name}@{widest}"
    decision = any_vault.registry.promote(version.ref, "a" * 128)
    assert decision.moved
    assert any_vault.registry.aliases(name) == {"a" * 128: widest}
    assert [e.subject for e in any_vault.registry.audit.events()][-2:] == [version.ref, f"{name}@{'a' * 128}"]


def test_data_versions_beyond_32_bits_resolve_list_and_continue(any_vault: Vault, project: Path) -> None:
    """A data version number the vault did not count up to itself (a record from elsewhere, later)."""
    (project / "raw.txt").write_text("one\n")
    any_vault.data.add("raw", project / "raw.txt")
    with any_vault.meta.transaction() as conn:
        conn.execute(sa.update(data_snapshots).where(data_snapshots.c.name == "raw").values(version=TOP - 1))
    assert any_vault.data.resolve(f"data:raw@v{TOP - 1}").version == TOP - 1
    (project / "raw.txt").write_text("two\n")
    snap, created = any_vault.data.add("raw", project / "raw.txt")
    assert (snap.ref, created) == (f"data:raw@v{TOP}", True)
    assert [s.version for s in any_vault.data.log("raw")] == [TOP, TOP - 1]
    assert any_vault.data.resolve("data:raw").version == TOP
    assert any_vault.data.get(f"data:raw@v{TOP}").snapshot.version == TOP
    [(latest, count)] = any_vault.data.datasets()
    assert (latest.version, count) == (TOP, 2)


def test_a_dataset_at_the_last_version_number_refuses_one_more_cleanly(any_vault: Vault, project: Path) -> None:
    (project / "raw.txt").write_text("one\n")
    any_vault.data.add("raw", project / "raw.txt")
    with any_vault.meta.transaction() as conn:
        conn.execute(sa.update(data_snapshots).values(version=TOP))
    (project / "raw.txt").write_text("two\n")
    with pytest.raises(ValidationError, match=f"data:raw is at v{TOP}") as err:
        any_vault.data.add("raw", project / "raw.txt")
    assert err.value.exit_code == 2
    assert [s.version for s in any_vault.data.log("raw")] == [TOP]  # nothing written


def test_a_vault_made_before_the_migration_is_upgraded_on_open(
    any_vault: Vault, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = empty_metadata(any_vault, project)  # then migrated by the older labvault
    with monkeypatch.context() as patch:
        ship_migrations_before(6, tmp_path, patch)  # 0006_bigint_versions
        old = Vault.open(project)
        old.registry.register("fraud/detector@1.2.3", _model(project, b"old"))
        (project / "raw.txt").write_text("old\n")
        old.data.add("raw", project / "raw.txt")
        if url is not None:  # the bug: PostgreSQL's INTEGER refused a part above 2^31-1 (exit 7)
            with pytest.raises(StorageError, match="out of range") as err:
                old.registry.register(f"fraud/detector@{ABOVE_32_BITS}.0.0", _model(project, b"above"))
            assert err.value.exit_code == 7
        old.close()
    new = Vault.open(project)
    try:
        assert new.meta.schema_is_current()
        columns = {
            (table, c["name"]): c["type"]
            for table in ("registry_versions", "data_snapshots")
            for c in sa.inspect(new.meta.engine).get_columns(table)
        }
        for column in (("registry_versions", "major"), ("registry_versions", "minor"), ("registry_versions", "patch")):
            assert isinstance(columns[column], sa.BigInteger if url else sa.Integer), column
        assert isinstance(columns[("data_snapshots", "version")], sa.BigInteger if url else sa.Integer)
        assert new.registry.resolve("fraud/detector@1.2.3").version == "1.2.3"  # old rows kept
        assert new.data.resolve("data:raw@v1").version == 1
        new.registry.register(f"fraud/detector@{TOP}.{TOP}.{TOP}", _model(project, b"top"))
        assert [m.latest for m in new.registry.models()] == [f"{TOP}.{TOP}.{TOP}"]
        assert [v.version for v in new.registry.versions("fraud/detector")] == ["1.2.3", f"{TOP}.{TOP}.{TOP}"]
    finally:
        new.close()


@pytest.mark.postgres
def test_cli_registers_and_gets_a_64_bit_version_on_postgres(project: Path, pg_url: str) -> None:
    exe = shutil.which("labvault", path=str(Path(sys.executable).parent)) or "labvault"
    env = {**os.environ, "NO_COLOR": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([exe, *args], cwd=project, env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        return proc

    run("-q", "init", "--db", pg_url)
    _model(project, b"top")
    run("-q", "models", "register", f"fraud/detector@{TOP}.0.0", "model")
    run("-q", "models", "register", f"fraud/detector@{ABOVE_32_BITS}.0.0", "model")
    listing = run("models", "versions", "fraud/detector", "--json").stdout
    assert listing.index(f'"{ABOVE_32_BITS}.0.0"') < listing.index(f'"{TOP}.0.0"')
    run("-q", "get", f"fraud/detector@{TOP}.0.0", "-o", "out")
    assert (project / "out" / "fraud" / "detector" / f"{TOP}.0.0" / "model.bin").read_bytes() == b"top"
