"""Signing in to the web UI in a real browser: the session cookie, CSRF, and ``--no-auth``'s Host and
Origin checks (which keep another web page from driving a server that asks for no token)."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from labvault.server.deps import Caller
from tests.server.conftest import lv, start_server, stop_server
from tests.ui.conftest import Site, sign_in

pytestmark = pytest.mark.timeout(120)


def _session_cookie(page: Any) -> dict[str, Any] | None:
    return next((c for c in page.context.cookies() if c["name"] == "labvault_session"), None)


def test_no_session_redirects_to_sign_in_and_back(page: Any, site: Site) -> None:
    first = httpx.get(f"{site.url}/runs?filter=status%20%3D%20%27finished%27", follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/login?next=%2Fruns%3Ffilter%3Dstatus%2520%253D%2520%2527finished%2527"
    run_id = site.runs[0].removeprefix("run:")
    page.goto(f"{site.url}/runs/{run_id}")
    assert urlsplit(page.url).path == "/login"
    page.fill("input[name=token]", site.tokens["reader"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/runs/{run_id}")
    assert page.locator("h1").first.inner_text().startswith("train-0")
    assert httpx.get(f"{site.url}/", follow_redirects=False).headers["location"] == "/runs"
    # A link from another site arrives without the SameSite=Strict cookie: the page reloads itself
    # from this site (which sends the cookie) before asking to sign in.
    signed_in = page.context.cookies()
    fresh = page.context.browser.new_context()
    try:
        fresh.add_cookies(signed_in)
        other = fresh.new_page()
        other.set_content(f'<a id="go" href="{site.url}/runs/{run_id}">run</a>')  # about:blank: cross-site
        other.click("#go")
        other.wait_for_url(f"{site.url}/runs/{run_id}")
        other.locator("#params").wait_for()
    finally:
        fresh.close()
    cross = httpx.get(f"{site.url}/runs/{run_id}?x=%22%3E", headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 200
    assert f'content="0;url=/runs/{run_id}?x=%22%3E"' in cross.text


def test_sign_in_sets_an_httponly_strict_cookie_that_is_not_the_token(page: Any, site: Site, tmp_path: Path) -> None:
    sign_in(page, site, "reader")
    assert urlsplit(page.url).path == "/runs"
    page.locator("table.runs tbody tr[data-run]").first.wait_for()
    page.screenshot(path=str(tmp_path / "runs.png"))
    cookie = _session_cookie(page)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain http on loopback; https sets Secure
    token = site.tokens["reader"]
    secret = token.split("_", 2)[2]
    assert secret not in cookie["value"]
    assert re.fullmatch(r"v1\.[0-9a-f]{12}\.\d+\.[0-9a-f]{64}", cookie["value"])
    key = site.root / ".labvault" / "ui-session.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The page carries the CSRF token for scripts (htmx sends it as a header).
    assert re.fullmatch(r"[0-9a-f]{40}", page.locator("meta[name=csrf-token]").get_attribute("content") or "")


def test_a_bad_token_shows_an_error(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/login")
    page.fill("input[name=token]", "lvt_000000000000_" + "x" * 43)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "unknown API token" in page.locator("#login-error").inner_text()
    assert urlsplit(page.url).path == "/login"
    assert _session_cookie(page) is None


def test_a_forged_or_revoked_session_signs_out(page: Any, site: Site) -> None:
    from labvault.vault import Vault

    with Vault.open(site.root) as vault:
        token, text = vault.access.create_token("short-lived", role="reader")
    site.tokens["short-lived"] = text
    sign_in(page, site, "short-lived")
    cookie = _session_cookie(page)
    assert cookie is not None
    page.goto(f"{site.url}/runs")
    assert urlsplit(page.url).path == "/runs"
    # Another token's id under the same signature: refused.
    forged = dict(cookie, value=cookie["value"].replace(token.id, "0" * 12))
    page.context.add_cookies([forged])
    page.goto(f"{site.url}/runs")
    assert urlsplit(page.url).path == "/login"
    page.context.add_cookies([cookie])
    page.goto(f"{site.url}/runs")
    assert urlsplit(page.url).path == "/runs"
    lv(site.root, "server", "token", "revoke", token.id)
    page.goto(f"{site.url}/runs")
    assert urlsplit(page.url).path == "/login"


def test_next_never_leaves_the_site(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/login?next=//evil.example/x")
    page.fill("input[name=token]", site.tokens["reader"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/runs")


def test_a_post_without_the_csrf_token_is_refused(page: Any, site: Site) -> None:
    sign_in(page, site, "reader")
    refused = page.request.post(f"{site.url}/logout", form={}, max_redirects=0)
    assert refused.status == 403
    assert "CSRF" in refused.text()
    wrong = page.request.post(f"{site.url}/logout", form={"csrf": "0" * 40}, max_redirects=0)
    assert wrong.status == 403
    assert _session_cookie(page) is not None
    # htmx sends it as a header, from the page's meta tag.
    csrf = page.locator("meta[name=csrf-token]").get_attribute("content") or ""
    by_header = page.request.post(f"{site.url}/logout", headers={"X-CSRF-Token": csrf}, max_redirects=0)
    assert by_header.status == 303
    assert _session_cookie(page) is None
    # The sign-out button sends it in the form: the session ends.
    sign_in(page, site, "reader")
    page.click("form.logout button[type=submit]")
    page.wait_for_url(f"{site.url}/login")
    assert _session_cookie(page) is None
    page.goto(f"{site.url}/runs")
    assert urlsplit(page.url).path == "/login"


def test_a_sign_in_form_from_another_site_is_refused(site: Site) -> None:
    # No sign-in cookie (SameSite=Strict keeps it from a cross-site post): the form's token fails.
    response = httpx.post(
        f"{site.url}/login", data={"token": site.tokens["admin"], "csrf": "x", "next": "/runs"}, follow_redirects=False
    )
    assert response.status_code == 403
    assert "labvault_session" not in response.headers.get("set-cookie", "")


@pytest.fixture(scope="module")
def no_auth(site: Site) -> Iterator[str]:
    proc, url = start_server(site.root, "--no-auth")
    try:
        yield url
    finally:
        log = stop_server(proc)
    assert "Traceback" not in log, log


def test_no_auth_checks_host_and_origin(no_auth: str, page: Any) -> None:
    port = urlsplit(no_auth).port
    assert httpx.get(f"{no_auth}/runs").status_code == 200
    assert httpx.get(f"{no_auth}/runs", headers={"Host": f"localhost:{port}"}).status_code == 200
    for host in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", f"10.0.0.1:{port}"):
        refused = httpx.get(f"{no_auth}/runs", headers={"Host": host})
        assert refused.status_code == 403, host
        assert "Host" in refused.json()["error"]
    assert httpx.get(f"{no_auth}/runs", headers={"Origin": f"http://127.0.0.1:{port}"}).status_code == 200
    for origin in ("https://evil.example", "null", f"http://evil.example:{port}", f"http://127.0.0.1:{port + 1}"):
        refused = httpx.post(f"{no_auth}/logout", headers={"Origin": origin}, data={"csrf": "x"})
        assert refused.status_code == 403, origin
        assert "not accepted" in refused.json()["error"]
    # The API is guarded too: a rebound name cannot create runs.
    api = httpx.post(f"{no_auth}/api/v1/runs", json={"name": "x"}, headers={"Host": f"evil.example:{port}"})
    assert api.status_code == 403
    # In the browser: no sign-in, the vault's own user.
    page.goto(f"{no_auth}/login?next=/runs")
    assert urlsplit(page.url).path == "/runs"
    assert page.locator("table.runs tbody tr[data-run]").count() >= 3


def test_labvault_ui_prints_its_address_and_serves_without_sign_in(site: Site) -> None:
    import subprocess
    import time

    from tests.e2e.conftest import LABVAULT
    from tests.server.conftest import clean_env, free_port

    port = free_port()
    proc = subprocess.Popen(
        [LABVAULT, "ui", "--port", str(port), "--no-browser"],
        cwd=site.root,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().decode().strip() == f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/runs")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response.status_code == 200
        assert "train-0" in response.text
        assert httpx.get(f"http://127.0.0.1:{port}/runs", headers={"Host": "evil.example"}).status_code == 403
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err, err


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_a_role_too_low_gets_a_page_naming_the_role(site: Site) -> None:
    # In process: no page of the runs module needs more than a reader; the dependency is what is tested.
    from fastapi import Depends
    from fastapi.testclient import TestClient

    from labvault.server.app import create_app
    from labvault.server.ui.session import page_caller
    from labvault.vault import Vault

    with Vault.open(site.root) as vault:
        app = create_app(vault)

        @app.get("/maintainers-only")
        def guarded(who: Caller = Depends(page_caller("maintainer"))) -> dict[str, str]:
            return {"user": who.user}

        with TestClient(app, base_url="http://127.0.0.1") as client:
            form = client.get("/login").text
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form)
            assert csrf is not None
            signed = client.post(
                "/login", data={"token": site.tokens["writer"], "csrf": csrf.group(1)}, follow_redirects=False
            )
            assert signed.status_code == 303
            refused = client.get("/maintainers-only")
            assert refused.status_code == 403, refused.text
            assert "this page needs the maintainer role" in refused.text
            assert refused.headers["content-type"].startswith("text/html")


def test_a_session_holds_across_server_processes_of_the_vault(page: Any, site: Site) -> None:
    proc, other = start_server(site.root)
    try:
        sign_in(page, site, "reader")
        page.goto(f"{other}/runs")  # the cookie is per host, not port: the other process receives it
        assert urlsplit(page.url).path == "/runs"
        page.locator("table.runs tbody tr[data-run]").first.wait_for()
    finally:
        log = stop_server(proc)
    assert "Traceback" not in log, log
