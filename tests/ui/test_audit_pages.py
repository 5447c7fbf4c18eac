"""``/audit`` in Chromium: the seeded events newest first, the chain verified, hostile text shown as text,
pages and filters, a broken chain named, and no serious accessibility violation."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest

from tests.server.conftest import lv
from tests.ui.a11y import check_a11y
from tests.ui.conftest import Site, sign_in

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def _has_login(site: Site) -> bool:
    return httpx.get(f"{site.url}/login", timeout=10).status_code == 200


def _open(page: Any, site: Site, path: str) -> Any:
    """``path`` as a reader (through the sign-in page when the server has one); the response."""
    if _has_login(site):
        sign_in(page, site, "reader")
    return page.goto(f"{site.url}{path}")


def _seqs(page: Any) -> list[int]:
    return [int(s) for s in page.locator("table.audit tbody tr").evaluate_all("rs => rs.map(r => r.dataset.seq)")]


def test_lists_seeded_events_newest_first_and_verifies_the_chain(page: Any, site: Site) -> None:
    response = _open(page, site, "/audit")
    assert response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert page.title().startswith("Audit log")
    verified = page.locator("#audit-verify")
    assert verified.get_attribute("data-verified") == "ok"
    assert "Chain verified" in verified.inner_text()
    seqs = _seqs(page)
    assert seqs, "no audit events listed"
    assert seqs == sorted(seqs, reverse=True)
    promote = page.locator("table.audit tbody tr", has_text="demo/clf@prod").first
    cells = promote.locator("td").all_inner_texts()
    assert cells[3] == "promote"
    assert cells[6] == "0.1.0"
    assert "first release" in cells[7]
    check_a11y(page)


def test_hostile_details_are_text_never_markup(page: Any, site: Site) -> None:
    lv(site.root, "models", "approve", "demo/clf@0.1.0", "--for", "staging", "-m", HOSTILE)
    _open(page, site, "/audit?action=approve")
    rows = page.locator("table.audit tbody tr")
    assert rows.count() == 1
    message = rows.first.locator("td.audit-details dt", has_text="message").locator("xpath=following-sibling::dd")
    assert message.inner_text() == HOSTILE
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("table.audit script, table.audit img").count() == 0


def test_pages_and_filters(page: Any, site: Site) -> None:
    for i in range(4):
        lv(site.root, "models", "approve", "demo/clf@0.1.0", "--for", f"stage{i}", "-m", f"batch {i}")
    _open(page, site, "/audit")
    everything = _seqs(page)
    _open(page, site, "/audit?per=2")
    assert _seqs(page) == everything[:2]
    assert page.locator("a[rel=prev]").count() == 0
    page.click("a[rel=next]")
    assert "page=2" in page.url
    assert _seqs(page) == everything[2:4]
    page.click("a[rel=prev]")
    assert _seqs(page) == everything[:2]
    # The filter form keeps the page size and narrows to one action and a subject prefix.
    page.fill("#audit-action", "approve")
    page.fill("#audit-subject", "demo/clf@0.1")
    page.click("form.audit-filter button[type=submit]")
    page.wait_for_url("**/audit?*action=approve*")
    listed = page.locator("table.audit tbody tr td:nth-child(4)").all_inner_texts()
    assert listed
    assert set(listed) == {"approve"}
    _open(page, site, "/audit?action=no-such-action")
    assert page.locator("table.audit").count() == 0
    assert "No audit events match this filter" in page.locator("main").inner_text()


def test_login_page_is_accessible(page: Any, site: Site) -> None:
    if not _has_login(site):
        pytest.skip("no /login page in this tree yet")
    page.goto(f"{site.url}/login")
    check_a11y(page)


@pytest.fixture
def tampered(site: Site) -> Any:
    """The oldest event's actor changed behind labvault's back, put back afterwards."""
    db = site.root / ".labvault" / "meta.db"
    if not db.exists():
        pytest.skip(f"no SQLite database at {db}")
    conn = sqlite3.connect(db)
    try:
        table = "audit_events"
        (actor,) = conn.execute(f"SELECT actor FROM {table} WHERE seq = 1").fetchone()
        conn.execute(f"UPDATE {table} SET actor = 'mallory' WHERE seq = 1")
        conn.commit()
        yield
        conn.execute(f"UPDATE {table} SET actor = ? WHERE seq = 1", (actor,))
        conn.commit()
    finally:
        conn.close()


def test_a_broken_chain_is_named(page: Any, site: Site, tampered: Any) -> None:
    _open(page, site, "/audit")
    verified = page.locator("#audit-verify")
    assert verified.get_attribute("data-verified") == "broken"
    assert verified.get_attribute("data-first-bad") == "1"
    assert "altered" in page.locator("ul.audit-problems").inner_text()


def test_check_a11y_fails_on_a_serious_violation(page: Any) -> None:
    page.set_content('<html lang="en"><title>t</title><main><img src="x.png"><input type="text"></main></html>')
    with pytest.raises(pytest.fail.Exception) as info:
        check_a11y(page)
    assert "image-alt (critical)" in str(info.value)
    assert "label (critical)" in str(info.value)
