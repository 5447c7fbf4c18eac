"""The real server: ``labvault server`` in a subprocess on a free loopback port, over a SQLite vault
and over a team vault (PostgreSQL + the moto S3 server process), served by two server processes
sharing it.

Module-scoped: one vault and its servers per test module and backend, so starting them is paid once.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from labvault.vault import Vault
from tests.e2e.conftest import LABVAULT

ROLES = ("reader", "writer", "maintainer", "admin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_") or k.startswith("LABVAULT_TEST_")}
    env["NO_COLOR"] = "1"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def lv(root: Path, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
    """The real ``labvault`` executable in ``root``; asserts the exit code and that no traceback leaked."""
    proc = subprocess.run(
        [LABVAULT, *args], cwd=root, env=clean_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if expect is not None:
        assert proc.returncode == expect, f"labvault {args} exited {proc.returncode}: {proc.stdout} {proc.stderr}"
    return proc


def start_server(root: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``labvault server``; its log (one JSON line per request) goes to a file beside ``root``."""
    port = free_port()
    log = (root.parent / f"server-{port}.log").open("wb")
    proc = subprocess.Popen(
        [LABVAULT, "server", "--port", str(port), *extra],
        cwd=root,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    proc.log_path = root.parent / f"server-{port}.log"  # type: ignore[attr-defined]
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.log_path.read_text()}")  # type: ignore[attr-defined]
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start in 30 s")


def stop_server(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return str(proc.log_path.read_text())  # type: ignore[attr-defined]


@dataclass
class Served:
    root: Path
    urls: list[str]
    tokens: dict[str, str]
    backend: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _clients: dict[tuple[str, int], httpx.Client] = field(default_factory=dict)

    def client(self, role: str | None = "admin", *, server: int = 0) -> httpx.Client:
        """A client of server ``server`` sending the ``role`` token (None: no token)."""
        key = (role or "", server)
        if key not in self._clients:
            headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
            self._clients[key] = httpx.Client(base_url=self.urls[server] + "/api/v1", headers=headers, timeout=60)
        return self._clients[key]

    def close(self) -> str:
        for c in self._clients.values():
            c.close()
        return "".join(stop_server(p) for p in self.procs)


FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"


@pytest.fixture(scope="module")
def pg_module_url(pg_admin_url: str) -> Iterator[str]:
    import sqlalchemy as sa

    schema = f"lv_test_{secrets.token_hex(6)}"
    engine = sa.create_engine("postgresql+psycopg://" + pg_admin_url.split("://", 1)[1])
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg_admin_url else "?"
    try:
        yield f"{pg_admin_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


def serve(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Served]:
    """A vault with one token per role, served by the real executable (two processes on the team vault).

    The team vault's ``AWS_*`` variables are set for the module, so that the executables this module
    runs (servers, ``lv``) and the in-process ``Vault.open`` all reach the same moto S3 server.
    """
    root = tmp_path_factory.mktemp("served") / "proj"
    root.mkdir()
    env = pytest.MonkeyPatch()
    request.addfinalizer(env.undo)
    if backend == "team":
        s3 = request.getfixturevalue("s3_server")
        for key, value in s3.env().items():
            env.setenv(key, value)
        objects = f"s3://{s3.bucket()}/vault"
        lv(root, "init", "--db", request.getfixturevalue("pg_module_url"), "--objects", objects)
    else:
        lv(root, "init")
    with Vault.open(root) as vault:  # in-process: the token commands' own tests run the executable
        tokens = {role: vault.access.create_token(f"{role}-user", role=role)[1] for role in ROLES}
    served = Served(root=root, urls=[], tokens=tokens, backend=backend)
    try:
        for _ in range(2 if backend == "team" else 1):
            proc, url = start_server(root)
            served.procs.append(proc)
            served.urls.append(url)
        yield served
    finally:
        log = served.close()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module", params=["sqlite", pytest.param("team", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A module sets ``TEAM_BY_DEFAULT = False`` to run its team-vault half only with ``LABVAULT_TEST_FULL=1``
    (the parity modules whose every command the team half of the other modules already crosses)."""
    if request.param == "team" and not FULL and not getattr(request.module, "TEAM_BY_DEFAULT", True):
        pytest.skip("team-vault half of this module: LABVAULT_TEST_FULL=1")
    yield from serve(request, tmp_path_factory, request.param)


def error_of(response: httpx.Response, status: int, code: int | None = None) -> dict[str, object]:
    """The error body, after checking the status and its shape ``{error, hint, code}``."""
    assert response.status_code == status, f"{response.status_code} != {status}: {response.text}"
    body = response.json()
    assert set(body) == {"error", "hint", "code"}, body
    if code is not None:
        assert body["code"] == code, body
    return body


__all__ = ["ROLES", "Served", "error_of", "free_port", "lv", "serve", "start_server", "stop_server", "sys"]
