"""The lineage pages in a real browser: a model alias back to its run and snapshot, a snapshot forward
to its runs, versions and aliases, and the diff of two lineages side by side."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.server.conftest import lv
from tests.ui.conftest import Site, sign_in


def enter(page: Any, site: Site, role: str = "reader") -> None:
    """Sign in as ``role`` where the server has a sign-in page; before it had one, pages served everyone."""
    if httpx.get(f"{site.url}/login", timeout=10).status_code == 200:
        sign_in(page, site, role)


def test_model_alias_upstream_to_run_and_snapshot(page: Any, site: Site, tmp_path: Path) -> None:
    enter(page, site)
    page.goto(f"{site.url}/lineage?ref=demo/clf@prod")
    run_id = site.runs[2].split(":", 1)[1]
    up = page.locator("#upstream")
    root = up.locator("li[data-kind=model_version]").first
    assert root.get_attribute("data-ref") == "demo/clf@0.1.0"
    run = root.locator(f"li[data-ref='run:{run_id}']")
    assert run.locator("a").first.get_attribute("href") == f"/runs/{run_id}"
    assert "registered" in run.locator(".edge").first.inner_text()
    snap = run.locator("li[data-ref='data:tx@v1']")
    assert snap.locator("a").first.get_attribute("href") == "/data/tx/v1"
    assert "input" in snap.inner_text()
    down = page.locator("#downstream")
    assert down.locator("li[data-kind=alias][data-ref='demo/clf@prod'] a").get_attribute("href") == "/models/demo/clf"
    page.screenshot(path=str(tmp_path / "lineage.png"), full_page=True)

    # nodes link to their pages
    snap.locator("a").first.click()
    page.wait_for_url(re.compile(r"/data/tx/v1$"))


def test_snapshot_downstream_by_path(page: Any, site: Site) -> None:
    enter(page, site)
    page.goto(f"{site.url}/lineage/data%3Atx%40v1")
    down = page.locator("#downstream")
    for ref in site.runs:
        assert down.locator(f"li[data-ref='{ref}']").count() == 1
    run = down.locator(f"li[data-ref='{site.runs[2]}']")
    version = run.locator("li[data-ref='demo/clf@0.1.0']")
    assert version.locator("a").first.get_attribute("href") == "/models/demo/clf/versions/0.1.0"
    assert version.locator("li[data-ref='demo/clf@prod']").count() == 1
    assert page.locator("#upstream").get_by_text("Nothing recorded upstream").count() == 1


def test_lineage_diff_side_by_side(page: Any, site: Site, tmp_path: Path) -> None:
    enter(page, site)
    page.goto(f"{site.url}/lineage?ref=demo/clf@0.1.0")
    page.fill("#lineage-diff-form input[name=b]", site.runs[0])
    page.click("#lineage-diff-form button[type=submit]")
    page.wait_for_url(re.compile(r"/lineage/diff\?"))
    sides = page.locator("#sides").inner_text()
    assert site.runs[2] in sides
    assert site.runs[0] in sides
    auc = page.locator("tr[data-metric=auc]")
    assert auc.get_attribute("class") == "differs"
    cells = auc.locator("td").all_inner_texts()
    assert [float(cells[0]), float(cells[1])] == [0.9, 0.8]
    assert "same" in page.locator("h2#data").inner_text()  # both read data:tx@v1
    assert "same" in page.locator("h2#seeds").inner_text()
    page.screenshot(path=str(tmp_path / "lineage-diff.png"), full_page=True)


def test_a_bad_reference_is_refused_as_text(page: Any, site: Site) -> None:
    enter(page, site)
    response = page.goto(f"{site.url}/lineage?ref=%3Cscript%3Ewindow.pwned%3D1%3C%2Fscript%3E")
    assert response.status == 400
    assert page.evaluate("window.pwned") is None
    response = page.goto(f"{site.url}/lineage?ref=run:0123456789ab")
    assert response.status == 404
    page.goto(f"{site.url}/lineage")
    assert page.locator("#lineage-form input[name=ref]").count() == 1


def test_a_hostile_run_name_is_text(page: Any, site: Site) -> None:
    hostile = "<img src=x onerror=window.pwned=1>"
    lv(site.root, "run", "-n", hostile, "-i", "data:tx@v1", "-q", "--", sys.executable, "-c", "pass")
    runs = json.loads(lv(site.root, "runs", "list", "--json").stdout)
    ref = next(r["ref"] for r in runs if r["name"] == hostile)
    enter(page, site)
    page.goto(f"{site.url}/lineage?ref={ref}")
    assert hostile in page.locator(f"#upstream li[data-ref='{ref}'] .label").first.inner_text()
    page.goto(f"{site.url}/lineage?ref=data:tx@v1")
    assert page.locator(f"#downstream li[data-ref='{ref}']").count() == 1
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.pwned") is None
