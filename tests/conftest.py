"""Shared fixtures.

- ``clean_environ`` (autouse): no LABVAULT_* variable leaks in from the developer's shell
  (LABVAULT_TEST_* are kept).
- ``vault``: a fresh vault on SQLite in a temp project folder.
- ``meta_url``: parametrised over SQLite and PostgreSQL, one fresh schema per test. PostgreSQL comes
  from LABVAULT_TEST_POSTGRES_URL; unreachable, it is skipped with the reason shown, except with
  CI=true, where it fails the run.
- ``pg_vault``: a fresh vault whose metadata lives in a fresh PostgreSQL schema.
- ``s3_server``: one moto S3 server process on loopback for the session (``tests/s3server.py``);
  ``s3_server.bucket()`` makes a fresh bucket, ``s3_server.env()`` gives subprocesses its ``AWS_*``.
- ``dask_cluster``: a ``dask scheduler`` and two ``dask worker`` processes on loopback for the session
  (``tests/dask_cluster.py``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from labvault.vault import Vault
from tests.dask_cluster import DaskCluster
from tests.s3server import S3Server

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LABVAULT_") and not name.startswith("LABVAULT_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LABVAULT_USER", "tester@example.com")


def _pg_base_url() -> str:
    return os.environ.get("LABVAULT_TEST_POSTGRES_URL", DEFAULT_PG)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The PostgreSQL URL, checked reachable once per session."""
    import sqlalchemy as sa

    url = _pg_base_url()
    driver_url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        engine = sa.create_engine(driver_url)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:  # any failure to connect means: no PostgreSQL here
        reason = f"PostgreSQL unreachable at {url}: {type(exc).__name__}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true requires it)")
        pytest.skip(reason)
    return url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    import sqlalchemy as sa

    schema = f"lv_test_{secrets.token_hex(6)}"
    driver_url = "postgresql+psycopg://" + pg_admin_url.split("://", 1)[1]
    engine = sa.create_engine(driver_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg_admin_url else "?"
    try:
        yield f"{pg_admin_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder, made the current directory."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def vault(project: Path) -> Iterator[Vault]:
    v, created = Vault.init(project)
    assert created
    yield v
    v.close()


@pytest.fixture
def pg_vault(project: Path, pg_url: str) -> Iterator[Vault]:
    v, _ = Vault.init(project, database_url=pg_url)
    yield v
    v.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_vault(request: pytest.FixtureRequest, project: Path) -> Iterator[Vault]:
    """The same test on a SQLite vault and on a PostgreSQL vault."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    v, _ = Vault.init(project, database_url=url)
    yield v
    v.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server process on loopback, started once and stopped at the end of the session."""
    pytest.importorskip("moto.server")
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A Dask scheduler and two workers on loopback, started once and stopped at the end of the session."""
    pytest.importorskip("distributed")
    cluster = DaskCluster(tmp_path_factory.mktemp("dask")).start()
    try:
        yield cluster
    finally:
        cluster.stop()
