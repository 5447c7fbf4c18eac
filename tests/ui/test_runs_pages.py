"""The runs pages in a real browser: the table (filter, errors with the caret, sort, pages, columns),
a run's page (params, a drawn chart, artifact downloads, child runs), comparison, and hostile text."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.ui.conftest import Site, sign_in

pytestmark = pytest.mark.timeout(120)

ROWS = "table.runs tbody tr[data-run]"


def _names(page: Any) -> list[str]:
    return [t.strip() for t in page.locator(f"{ROWS} td.name").all_inner_texts()]


def _id(ref: str) -> str:
    return ref.removeprefix("run:")


def test_filter_with_errors_shown_at_the_caret(page: Any, site: Site, tmp_path: Path) -> None:
    sign_in(page, site, "reader")
    page.locator(ROWS).first.wait_for()
    assert sorted(_names(page)) == ["train-0", "train-1", "train-2"]
    page.fill("#filter", "params.lr < 0.05 and project = 'demo'")
    page.click("form.filters button[type=submit]")
    expect(page.locator(ROWS)).to_have_count(2)
    assert sorted(_names(page)) == ["train-1", "train-2"]
    assert "filter=params.lr" in page.url  # htmx pushed the filter into the address: shareable
    page.screenshot(path=str(tmp_path / "runs-filtered.png"))
    bad = "params.lr < and status = 'finished'"
    page.fill("#filter", bad)
    page.click("form.filters button[type=submit]")
    error = page.locator(".filter-error")
    error.wait_for()
    assert "invalid filter at column 13" in error.inner_text()
    text, caret = page.locator(".filter-error pre.caret").inner_text().split("\n")[:2]
    assert text == bad
    assert caret.index("^") == 12  # under the 'and' that stands where a value should be
    assert page.locator(ROWS).count() == 0


def test_sort_by_a_param_and_a_metric(page: Any, site: Site) -> None:
    sign_in(page, site, "reader")
    page.goto(f"{site.url}/runs?filter=project%20%3D%20%27demo%27")
    header = page.locator("th[data-key='params.lr'] a")
    header.click()
    expect(page.locator("th[data-key='params.lr']")).to_have_attribute("aria-sort", "ascending")
    assert _names(page) == ["train-2", "train-1", "train-0"]
    page.locator("th[data-key='params.lr'] a").click()
    expect(page.locator("th[data-key='params.lr']")).to_have_attribute("aria-sort", "descending")
    assert _names(page) == ["train-0", "train-1", "train-2"]
    page.goto(f"{site.url}/runs?filter=project%20%3D%20%27demo%27&sort=-metrics.auc")
    assert _names(page) == ["train-2", "train-1", "train-0"]
    assert page.locator(f"{ROWS} .badge.status-finished").count() == 3


def test_pages_and_chosen_columns(page: Any, site: Site) -> None:
    sign_in(page, site, "reader")
    page.goto(f"{site.url}/runs?filter=project%20%3D%20%27demo%27&sort=name&size=2&col=params.depth&col=tags.team")
    assert _names(page) == ["train-0", "train-1"]
    headers = page.locator("table.runs thead th").all_inner_texts()
    assert "params.depth" in headers
    assert "tags.team" in headers
    assert "params.lr" not in headers
    assert page.locator("a[rel=prev]").count() == 0
    page.click("a[rel=next]")
    expect(page.locator(ROWS)).to_have_count(1)
    assert _names(page) == ["train-2"]
    assert "page=2" in page.url
    assert page.locator("a[rel=next]").count() == 0
    assert page.locator(f"{ROWS} td.value").all_inner_texts() == ["6", "fraud"]  # the chosen columns, kept
    page.click("a[rel=prev]")
    expect(page.locator(ROWS)).to_have_count(2)


def test_run_page_params_chart_and_artifact_download(page: Any, site: Site, tmp_path: Path) -> None:
    sign_in(page, site, "reader")
    run_id = _id(site.runs[1])
    page.goto(f"{site.url}/runs/{run_id}")
    params = page.locator("#params table").inner_text()
    assert "lr" in params
    assert "0.03" in params
    chart = page.locator("figure.chart", has=page.locator("figcaption", has_text="loss"))
    path = chart.locator("svg path.series")
    path.wait_for()
    assert int(path.get_attribute("data-points") or 0) == 50
    assert len(path.get_attribute("d") or "") > 200  # a drawn line, not an empty path
    chart.locator(".chart-log").check()
    assert chart.locator("svg path.series").count() == 1
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)
    link = page.locator("#artifacts a", has_text="download").first
    response = page.request.get(site.url + (link.get_attribute("href") or ""))
    assert response.status == 200
    assert response.body() == b"model weights 1"
    assert "attachment" in response.headers["content-disposition"]
    sha = page.locator("#artifacts code.digest").first.inner_text()
    assert sha.startswith("sha256:")
    inputs = page.locator("#inputs a").first
    assert inputs.inner_text() == "data:tx@v1"
    assert inputs.get_attribute("href") == "/data/tx/v1"
    assert (
        "Python" in page.locator("#environment").inner_text() or "python" in page.locator("#environment").inner_text()
    )


def test_compare_highlights_differences_and_overlays_charts(page: Any, site: Site, tmp_path: Path) -> None:
    sign_in(page, site, "reader")
    page.goto(f"{site.url}/runs?filter=project%20%3D%20%27demo%27&sort=name")
    page.check(f"input[name=runs][value='{_id(site.runs[0])}']")
    page.check(f"input[name=runs][value='{_id(site.runs[2])}']")
    page.click("button[form=compare-form]")
    page.wait_for_url("**/compare?**")
    lr = page.locator("table.compare tr[data-key='lr']")
    assert "differs" in (lr.get_attribute("class") or "")
    assert lr.locator("td").all_inner_texts() == ["0.1", "0.01"]
    project = page.locator("table.compare tr[data-key='project']")
    assert "same" in (project.get_attribute("class") or "")
    chart = page.locator("figure.chart", has=page.locator("figcaption", has_text="loss"))
    chart.locator("svg path.series").nth(1).wait_for()
    assert chart.locator("svg path.series").count() == 2
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    # The selection is in the URL: the shared link opens the same comparison.
    share = page.locator("a[href^='/compare?runs=']").first.get_attribute("href")
    assert share == f"/compare?runs={_id(site.runs[0])},{_id(site.runs[2])}"
    page.goto(site.url + share)
    assert page.locator("table.compare").first.locator("thead th code").all_inner_texts() == [
        _id(site.runs[0]),
        _id(site.runs[2]),
    ]
    page.goto(f"{site.url}/compare?runs={_id(site.runs[0])}")
    assert "compare needs 2 to 10 runs" in page.locator("p.error").inner_text()


def test_hostile_text_is_shown_as_text_and_child_runs_are_listed(page: Any, site: Site) -> None:
    import hashlib

    evil = "<script>window.pwned = 1</script><b>bold</b>"
    api = httpx.Client(base_url=f"{site.url}/api/v1", headers={"Authorization": f"Bearer {site.tokens['writer']}"})
    with api:
        parent = api.post("/runs", json={"project": "hostile", "name": "parent"}).json()
        child = api.post(
            "/runs",
            json={
                "project": "hostile",
                "name": "child <i>italic</i>",
                "parent": parent["ref"],
                "params": {"note": evil},
                "tags": {"why": evil},
            },
        ).json()
        content = b"<script>window.pwned = 2</script>"
        digest = hashlib.sha256(content).hexdigest()
        api.put(f"/objects/{digest}", content=content).raise_for_status()
        api.post(
            f"/runs/{child['id']}/artifacts", json={"name": "<i>evil</i>.html", "digest": f"sha256:{digest}"}
        ).raise_for_status()
        api.post(f"/runs/{child['id']}/end", json={}).raise_for_status()
    sign_in(page, site, "reader")
    page.goto(f"{site.url}/runs?filter=project%20%3D%20%27hostile%27&col=params.note&col=tags.why")
    assert page.locator(f"{ROWS} td.value").first.inner_text() == evil
    page.goto(f"{site.url}/runs/{child['id']}")
    assert evil in page.locator("#params").inner_text()
    assert evil in page.locator("#tags").inner_text()
    assert "<i>evil</i>.html" in page.locator("#artifacts").inner_text()
    assert page.locator("h1").first.inner_text().startswith("child <i>italic</i>")
    assert page.evaluate("window.pwned") is None
    assert page.locator("main b, main i").count() == 0
    # The artifact downloads as an attachment, never rendered as a page of this site.
    download = page.request.get(site.url + (page.locator("#artifacts a").first.get_attribute("href") or ""))
    assert download.body() == content
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["x-content-type-options"] == "nosniff"
    page.goto(f"{site.url}/runs/{parent['id']}")
    link = page.locator("#children a", has_text="child")
    assert link.get_attribute("href") == f"/runs/{child['id']}"
    link.click()
    page.wait_for_url(f"{site.url}/runs/{child['id']}")
    assert urlsplit(page.url).path == f"/runs/{child['id']}"


def test_a_long_history_is_downsampled_keeping_its_spikes(page: Any, site: Site) -> None:
    api = httpx.Client(base_url=f"{site.url}/api/v1", headers={"Authorization": f"Bearer {site.tokens['writer']}"})
    with api:
        run = api.post("/runs", json={"project": "long", "name": "long"}).json()
        points = [{"key": "noise", "value": 100.0 if s == 3333 else (s % 7) / 7, "step": s} for s in range(6000)]
        api.post(f"/runs/{run['id']}/log", json={"metrics": points}).raise_for_status()
    sign_in(page, site, "reader")
    page.goto(f"{site.url}/runs/{run['id']}")
    drawn = page.locator("figure.chart svg path.series")
    drawn.wait_for()
    assert 1000 <= int(drawn.get_attribute("data-points") or 0) <= 2000
    data = page.evaluate("JSON.parse(document.getElementById('chart-data').textContent)")
    values = [v for _, v in data[0]["series"][0]["points"]]
    assert max(values) == 100.0
    assert min(values) == 0.0


def test_the_reproducibility_report_is_shown(page: Any, site: Site) -> None:
    import hashlib
    import json

    original = site.runs[0]
    report = json.dumps({"verdict": "reproduced", "metrics": {"auc": {"original": 0.8, "rerun": 0.8}}}).encode()
    digest = hashlib.sha256(report).hexdigest()
    api = httpx.Client(base_url=f"{site.url}/api/v1", headers={"Authorization": f"Bearer {site.tokens['writer']}"})
    with api:
        rerun = api.post(
            "/runs",
            json={
                "project": "demo-reruns",
                "name": "rerun",
                "tags": {"reproduces": original, "reproduce_verdict": "reproduced"},
            },
        ).json()
        api.put(f"/objects/{digest}", content=report).raise_for_status()
        added = api.post(
            f"/runs/{rerun['id']}/artifacts", json={"name": "reproduce.json", "digest": f"sha256:{digest}"}
        )
        added.raise_for_status()
        api.post(f"/runs/{rerun['id']}/end", json={}).raise_for_status()
    sign_in(page, site, "reader")
    page.goto(f"{site.url}/runs/{_id(original)}")
    section = page.locator("#reproducibility")
    assert rerun["ref"] in section.inner_text()
    assert '"verdict": "reproduced"' in section.locator("pre.report").inner_text()
    page.goto(f"{site.url}/runs/{rerun['id']}")
    assert "This run is a reproduction: reproduced" in page.locator("#reproducibility").inner_text()


def test_pages_run_no_inline_code_under_their_policy(page: Any, site: Site) -> None:
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    sign_in(page, site, "reader")
    for path in ("/runs", f"/runs/{_id(site.runs[0])}", f"/compare?runs={_id(site.runs[0])},{_id(site.runs[1])}"):
        response = page.goto(site.url + path)
        assert response is not None
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
    page.locator("figure.chart svg path.series").first.wait_for(state="attached")
    assert violations == []
