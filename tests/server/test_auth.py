"""Tokens and roles: 401 without a valid token (none, malformed, unknown, revoked, expired), 403 for a
role too low, on every endpoint of the schema; and the token commands of the real executable."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from labvault.entities import utcnow
from labvault.entities.access import ROLES
from labvault.errors import ValidationError
from labvault.server.routes import audit, data, models, object_batch, objects, runs, uploads
from labvault.vault import Vault
from tests.server.conftest import Served, error_of, lv


def test_no_token_is_401_with_the_error_body(served: Served) -> None:
    body = error_of(served.client(None).get("/runs"), 401, 8)
    assert "token" in str(body["error"])
    assert served.client(None).get("/runs").headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer nonsense", "Basic abc", "Bearer lvt_000000000000_" + "A" * 43, "lvt_x", "Bearer " + "x" * 5000],
)
def test_malformed_or_unknown_tokens_are_401(served: Served, header: str) -> None:
    response = httpx.get(served.urls[0] + "/api/v1/runs", headers={"Authorization": header})
    error_of(response, 401, 8)


def test_a_right_id_with_a_wrong_secret_is_401(served: Served) -> None:
    good = served.tokens["admin"]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    error_of(httpx.get(served.urls[0] + "/api/v1/runs", headers={"Authorization": f"Bearer {forged}"}), 401, 8)


def test_revoked_token_is_401(served: Served) -> None:
    text = lv(served.root, "server", "token", "create", "eve", "--role", "writer").stdout.strip()
    auth = {"Authorization": f"Bearer {text}"}
    assert httpx.get(served.urls[0] + "/api/v1/runs", headers=auth).status_code == 200
    token_id = text.split("_")[1]
    out = lv(served.root, "server", "token", "revoke", token_id).stdout
    assert token_id in out
    body = error_of(httpx.get(served.urls[0] + "/api/v1/runs", headers=auth), 401, 8)
    assert "revoked" in str(body["error"])
    listed = lv(served.root, "server", "token", "list", "--json").stdout
    assert f'"id": "{token_id}"' in listed
    assert '"state": "revoked"' in listed
    assert text.split("_", 2)[2] not in listed  # never the secret


def test_expired_token_is_401(served: Served) -> None:
    with Vault.open(served.root) as vault:
        _, text = vault.access.create_token("old", role="reader", expires_days=1)
        # Move the clock instead of waiting a day: the stored expiry, set in the past.
        import sqlalchemy as sa

        from labvault.storage.meta.tables.access import server_tokens

        with vault.meta.transaction() as conn:
            conn.execute(
                sa.update(server_tokens)
                .where(server_tokens.c.id == text.split("_")[1])
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
    body = error_of(httpx.get(served.urls[0] + "/api/v1/runs", headers={"Authorization": f"Bearer {text}"}), 401, 8)
    assert "expired" in str(body["error"])


def _routes_and_roles() -> list[tuple[str, str, str]]:
    """Every API route and the role it needs, read from the routers the application mounts."""
    found = []
    for module in (runs, object_batch, uploads, objects, data, models, audit):
        for route in module.router.routes:
            assert isinstance(route, APIRoute)
            names = [d.call.__name__ for d in route.dependant.dependencies if d.call is not None]
            needed = [n.removeprefix("needs_") for n in names if n.startswith("needs_")]
            assert len(needed) == 1, f"{route.path} names no role"
            found.extend((method, "/api/v1" + route.path, needed[0]) for method in route.methods)
    return found


def test_every_route_names_a_role() -> None:
    routes = _routes_and_roles()
    assert len(routes) > 30
    roles = {r for *_, r in routes}
    assert roles == {"reader", "writer", "maintainer"}


def test_a_lower_role_is_always_refused(served: Served) -> None:
    for method, path, needed in _routes_and_roles():
        url = re.sub(r"\{(\w+)\}", lambda m: {"digest": "a" * 64}.get(m.group(1), "x"), path).removeprefix("/api/v1")
        for role in ROLES[: ROLES.index(needed)]:
            response = served.client(role).request(method, url, json={})
            body = error_of(response, 403, 8)
            assert needed in str(body["error"]), (method, path, role)


def test_token_commands_refuse_bad_input(vault: Vault) -> None:
    root = vault.root
    err = lv(root, "server", "token", "create", "x", "--role", "boss", expect=2).stderr
    assert err.startswith("error: unknown role")
    assert "hint:" in err
    lv(root, "server", "token", "create", "../x", "--role", "reader", expect=2)
    lv(root, "server", "token", "create", "x", "--role", "reader", "--expires", "soon", expect=2)
    lv(root, "server", "token", "revoke", "0123456789ab", expect=3)


def test_no_auth_only_on_loopback(vault: Vault) -> None:
    err = lv(vault.root, "server", "--no-auth", "--host", "0.0.0.0", expect=2).stderr
    assert "loopback" in err


def test_token_service_refuses_bad_values(vault: Vault) -> None:
    with pytest.raises(ValidationError, match="expires"):
        vault.access.create_token("x", role="reader", expires_days=0)
    with pytest.raises(ValidationError, match="token id"):
        vault.access.revoke_token("../../etc")
    token, text = vault.access.create_token("x", role="reader")
    assert vault.access.revoke_token(token.id).revoked_at is not None
    again = vault.access.revoke_token(text)  # the whole token names it too; revoking twice is a no-op
    assert again.revoked_at is not None


def test_no_auth_on_loopback_acts_as_the_vault_user(vault: Vault) -> None:
    from tests.server.conftest import start_server, stop_server

    proc, url = start_server(vault.root, "--no-auth")
    try:
        response = httpx.post(url + "/api/v1/runs", json={"name": "local"})
        assert response.status_code == 201, response.text
        assert response.json()["user"]  # the server process's own identity (git's user.email here)
    finally:
        log = stop_server(proc)
    assert "Traceback" not in log


def test_server_outside_a_vault_is_exit_3(tmp_path: Path) -> None:
    err = lv(tmp_path, "server", "--port", "1", expect=3).stderr
    assert err.startswith("error: not inside a labvault vault")
