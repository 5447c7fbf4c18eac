"""The data pages in a real browser: datasets, versions, a manifest, and the drift diff with PSI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import lv
from tests.ui.conftest import Site, sign_in

HOSTILE = "<script>window.pwned=1</script>"
HOSTILE_FILE = "<img src=x onerror=window.pwned=2>.csv"
HOSTILE_COLUMN = "<b>bold</b>"


def enter(page: Any, site: Site, role: str = "reader") -> None:
    """Sign in as ``role`` where the server has a sign-in page; before it had one, pages served everyone."""
    if httpx.get(f"{site.url}/login", timeout=10).status_code == 200:
        sign_in(page, site, role)


def shot(page: Any, out: Path, name: str) -> None:
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)


def test_datasets_versions_and_manifest(page: Any, site: Site, tmp_path: Path) -> None:
    enter(page, site)
    page.goto(f"{site.url}/data")
    row = page.locator("#datasets tbody tr", has_text="tx")
    assert row.locator("td").nth(1).inner_text() == "v2"
    assert row.locator("td").nth(2).inner_text() == "2"
    shot(page, tmp_path, "data")

    row.get_by_role("link", name="tx").click()
    page.wait_for_url(re.compile(r"/data/tx$"))
    assert page.locator("#versions tbody tr").all_inner_texts()[0].startswith("v2")
    assert page.locator("#versions tbody tr").count() == 2

    page.get_by_role("link", name="v1", exact=True).click()
    page.wait_for_url(re.compile(r"/data/tx/v1$"))
    assert page.locator("h1").inner_text() == "data:tx@v1"
    file_row = page.locator("#files tbody tr", has_text="tx.csv")
    assert "200" in file_row.inner_text()
    assert file_row.locator("ul.schema li .col").all_inner_texts() == ["id", "amount", "kind"]
    shot(page, tmp_path, "snapshot")
    # the version number may be written bare as well
    page.goto(f"{site.url}/data/tx/1")
    assert page.locator("h1").inner_text() == "data:tx@v1"


def test_diff_shows_psi_and_a_chart_per_column(page: Any, site: Site, tmp_path: Path) -> None:
    enter(page, site)
    page.goto(f"{site.url}/data/tx")
    page.click("#compare button[type=submit]")
    page.wait_for_url(re.compile(r"/data/tx/diff\?a=v1&b=v2$"))
    summary = page.locator("#summary").inner_text()
    assert "200 → 260" in summary
    assert "1 modified" in summary
    amount = page.locator("tr[data-column=amount]")
    psi = float(amount.locator("td.psi").inner_text().split()[0])
    assert psi > 0.25  # the seed shifted every amount by 40 and stretched it
    assert "high" in amount.locator("td.psi").inner_text()
    bars = amount.locator("svg.chart rect.bar")
    assert bars.count() == 2  # before and after
    assert float(bars.nth(1).get_attribute("width")) > 0
    kind = page.locator("tr[data-column=kind]")
    assert kind.locator("svg.chart rect.bar").count() == 4  # 'a' and 'b', before and after
    shot(page, tmp_path, "diff")


def test_hostile_names_are_text(page: Any, site: Site, tmp_path: Path) -> None:
    folder = site.root / "evil"
    folder.mkdir()
    (folder / HOSTILE_FILE).write_text(f"id,{HOSTILE_COLUMN}\n1,2\n")
    lv(site.root, "data", "add", "evil", "evil", "-m", HOSTILE, "-q")
    (folder / HOSTILE_FILE).write_text(f"id,{HOSTILE_COLUMN}\n1,2\n3,9\n")
    lv(site.root, "data", "add", "evil", "evil", "-m", HOSTILE, "-q")
    enter(page, site)
    for path in ("/data/evil", "/data/evil/v1", "/data/evil/diff?a=1&b=2"):
        page.goto(site.url + path)
        assert page.evaluate("window.pwned") is None
        assert page.locator("main img, main b, main script").count() == 0
    page.goto(f"{site.url}/data/evil")
    assert page.get_by_text(HOSTILE).count() == 2  # both versions carry the message
    page.goto(f"{site.url}/data/evil/v1")
    assert page.locator("#files td.path").inner_text() == HOSTILE_FILE
    assert page.locator("#files .col").all_inner_texts() == ["id", HOSTILE_COLUMN]
    page.goto(f"{site.url}/data/evil/diff?a=1&b=2")
    assert page.locator(f"tr[data-column='{HOSTILE_COLUMN}'] th").inner_text() == HOSTILE_COLUMN
    shot(page, tmp_path, "hostile")


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/data/nope", 404, "no dataset named 'nope'"),
        ("/data/tx/v9", 404, "data:tx@v9 does not exist"),
        ("/data/tx/diff?a=1&b=x", 400, "not a data version: 'x'"),
        ("/data/%3Cimg%20src%3Dx%20onerror%3Dwindow.pwned%3D1%3E", 400, "<img src=x onerror=window.pwned=1>"),
    ],
)
def test_bad_references_are_refused_as_text(page: Any, site: Site, path: str, status: int, message: str) -> None:
    enter(page, site)
    response = page.goto(site.url + path)
    assert response.status == status
    assert message in page.locator("body").inner_text()  # the error page's (or the API's) message
    assert page.locator("main script, main img").count() == 0
    assert page.evaluate("window.pwned") is None
