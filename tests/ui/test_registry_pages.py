"""The registry pages in a real browser: models, a model's aliases with their history and policy
results, a version, and the maintainer's actions (set an alias, roll back) with the policy's refusal
shown in the page; a reader sees no action and a direct POST is refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from labvault.server.ui import session
from tests.server.conftest import lv
from tests.ui.conftest import Site, sign_in

HOSTILE = "<script>window.pwned=1</script>"
HOSTILE_REASON = "<img src=x onerror=window.pwned=2>"
POLICY = """\
models:
  demo/clf:
    candidate:
      metrics: {auc: ">= 2"}
    staging:
      rollback_plan: required
    reviewed:
      approvals: 1
"""


def has_sign_in(site: Site) -> bool:
    return httpx.get(f"{site.url}/login", timeout=10).status_code == 200


def enter(page: Any, site: Site, role: str) -> None:
    """Sign in as ``role`` where the server has a sign-in page; before it had one, pages served everyone."""
    if has_sign_in(site):
        sign_in(page, site, role)


def shot(page: Any, out: Path, name: str) -> None:
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def versions(site: Site) -> Site:
    """0.2.0 from the second run (with a hostile message), and a policy the alias `candidate` cannot meet."""
    lv(
        site.root,
        "models",
        "register",
        "demo/clf",
        "--from",
        site.runs[1],
        "--artifact",
        "weights.txt",
        "--version",
        "0.2.0",
        "-q",
    )
    lv(
        site.root,
        "models",
        "register",
        "demo/clf",
        "--from",
        site.runs[0],
        "--artifact",
        "weights.txt",
        "--version",
        "0.3.0",
        "-m",
        HOSTILE,
        "-q",
    )
    (site.root / "labvault.yaml").write_text(POLICY)
    return site


def set_alias(page: Any, site: Site, version: str, alias: str, reason: str = "", waive: str = "") -> None:
    page.goto(f"{site.url}/models/demo/clf")
    page.select_option("#set-alias select[name=version]", version)
    page.fill("#set-alias input[name=alias]", alias)
    page.click("#set-alias button[type=submit]")
    page.wait_for_url(re.compile(r"/models/demo/clf/promote\?"))
    if reason:
        page.fill("#confirm input[name=reason]", reason)
    if waive:
        page.fill("#confirm input[name=waive_rollback_plan]", waive)
    page.click("#confirm button[type=submit]")
    page.wait_for_selector("#outcome")


def test_models_model_and_version_pages(page: Any, versions: Site, tmp_path: Path) -> None:
    site = versions
    enter(page, site, "reader")
    page.goto(f"{site.url}/models")
    row = page.locator("#models tbody tr", has_text="demo/clf")
    assert "prod → 0.1.0" in row.inner_text()
    shot(page, tmp_path, "models")
    row.get_by_role("link", name="demo/clf").click()
    page.wait_for_url(re.compile(r"/models/demo/clf$"))
    prod = page.locator("section[data-alias=prod]")
    assert prod.locator("h3").inner_text() == "prod → 0.1.0"
    first = prod.locator("table.history > tbody > tr").last
    assert "unset → 0.1.0" in first.inner_text()
    assert "no gates" in first.inner_text()  # the seed promoted it before there was a policy
    assert page.locator("#versions tbody tr").count() == 3
    shot(page, tmp_path, "model")

    page.locator("#versions").get_by_role("link", name="0.1.0", exact=True).click()
    page.wait_for_url(re.compile(r"/models/demo/clf/versions/0.1.0$"))
    run_id = site.runs[2].split(":", 1)[1]
    assert page.get_attribute("#source-run", "href") == f"/runs/{run_id}"
    assert page.get_attribute("#lineage-link", "href") == "/lineage?ref=demo/clf%400.1.0"
    assert "weights.txt" in page.locator("#tree td.path").all_inner_texts()
    shot(page, tmp_path, "version")
    page.goto(f"{site.url}/models/demo/clf/versions/prod")  # an alias names its version
    assert page.locator("h1").inner_text().startswith("demo/clf@0.1.0")


def test_maintainer_sets_an_alias_and_rolls_it_back(page: Any, versions: Site, tmp_path: Path) -> None:
    site = versions
    enter(page, site, "maintainer")
    set_alias(page, site, "0.2.0", "staging", reason=HOSTILE_REASON, waive="first staging release")
    assert "staging: unset → 0.2.0" in page.locator("#outcome").inner_text()
    assert "waived: first staging release" in page.locator("#outcome-gates").inner_text()
    set_alias(page, site, "0.1.0", "staging")
    assert "staging: 0.2.0 → 0.1.0" in page.locator("#outcome").inner_text()
    staging = page.locator("section[data-alias=staging]")
    rows = staging.locator("table.history > tbody > tr").all_inner_texts()
    assert "0.2.0 → 0.1.0" in rows[0]
    assert "unset → 0.2.0" in rows[1]
    assert HOSTILE_REASON in rows[1]  # the reason, as text
    # each promotion's policy result: the rollback plan gate, which passed, and why
    gate = staging.locator("table.history > tbody > tr").first.locator("table.gates tbody tr")
    assert gate.locator("td").all_inner_texts()[:3] == ["rollback_plan", "rollback_plan", "passed"]
    assert page.evaluate("window.pwned") is None
    shot(page, tmp_path, "promoted")

    staging.locator("form.rollback button[type=submit]").click()
    page.wait_for_selector("#outcome")
    assert "staging: 0.1.0 → 0.2.0" in page.locator("#outcome").inner_text()
    assert "rolled back" in page.locator("#outcome").inner_text()
    staging = page.locator("section[data-alias=staging]")
    assert staging.locator("h3").inner_text() == "staging → 0.2.0"
    assert staging.locator("table.history > tbody > tr").first.locator("td").nth(1).inner_text() == "rollback"
    # the server's own record agrees
    history = httpx.get(
        f"{site.url}/api/v1/models/demo/clf/history",
        params={"alias": "staging"},
        headers={"Authorization": f"Bearer {site.tokens['reader']}"},
    ).json()
    assert [m["action"] for m in history] == ["promote", "promote", "rollback"]


def test_policy_refusal_is_shown_in_the_page(page: Any, versions: Site, tmp_path: Path) -> None:
    site = versions
    enter(page, site, "maintainer")
    page.goto(f"{site.url}/models/demo/clf/versions/0.1.0")
    page.fill("#promote input[name=alias]", "candidate")
    page.click("#promote button[type=submit]")
    page.wait_for_url(re.compile(r"/models/demo/clf/promote\?version=0.1.0&alias=candidate"))
    assert "auc >= 2" in page.locator("#policy").inner_text()
    page.click("#confirm button[type=submit]")
    outcome = page.wait_for_selector("#outcome")
    assert "Refused by the policy" in outcome.inner_text()
    assert "candidate stays at unset" in outcome.inner_text()
    gate = page.locator("#outcome-gates tbody tr", has_text="auc")
    assert "failed" in gate.inner_text()
    assert ">= 2" in gate.inner_text()
    assert page.locator("section[data-alias=candidate]").count() == 0  # nothing moved
    assert "auc" in page.locator("#refusals").inner_text()
    shot(page, tmp_path, "refused")


def test_maintainer_approves_then_promotes(page: Any, versions: Site) -> None:
    site = versions
    enter(page, site, "maintainer")
    page.goto(f"{site.url}/models/demo/clf/promote?version=0.2.0&alias=reviewed")
    assert "approvals: at least 1" in page.locator("#policy").inner_text()
    page.fill("#approve input[name=message]", HOSTILE)
    page.click("#approve button[type=submit]")
    assert "is recorded" in page.locator("#outcome").inner_text()
    assert HOSTILE in page.locator("#approvals").inner_text()
    page.click("#confirm button[type=submit]")
    page.wait_for_selector("#outcome")
    assert "reviewed: unset → 0.2.0" in page.locator("#outcome").inner_text()
    gate = page.locator("#outcome-gates tbody tr", has_text="approvals")
    assert gate.locator("td").nth(2).inner_text() == "passed"
    assert page.evaluate("window.pwned") is None


def test_a_failed_action_is_shown_in_the_page(page: Any, versions: Site) -> None:
    site = versions
    enter(page, site, "maintainer")
    page.goto(f"{site.url}/models/demo/clf/promote?version=0.1.0&alias=bad..name")
    response_status: list[int] = []
    page.on("response", lambda r: response_status.append(r.status) if r.request.method == "POST" else None)
    page.click("#confirm button[type=submit]")
    outcome = page.wait_for_selector("#outcome")
    assert "invalid alias" in outcome.inner_text()
    assert response_status == [400]


def test_hostile_version_message_is_text(page: Any, versions: Site) -> None:
    site = versions
    enter(page, site, "reader")
    page.goto(f"{site.url}/models/demo/clf/versions/0.3.0")
    assert page.get_by_text(HOSTILE).count() == 1
    page.goto(f"{site.url}/models/demo/clf")
    assert page.locator("#versions").get_by_text(HOSTILE).count() == 1
    assert page.evaluate("window.pwned") is None
    assert page.locator("main script").count() == 0


def test_reader_sees_no_action_and_a_direct_post_is_refused(page: Any, versions: Site) -> None:
    site = versions
    if not has_sign_in(site):
        pytest.skip("the server has no sign-in page yet: every page caller is the vault's own admin")
    sign_in(page, site, "reader")
    page.goto(f"{site.url}/models/demo/clf")
    assert page.locator("section[data-alias=prod]").count() == 1
    assert page.locator("#actions, form.rollback, main form[method=post]").count() == 0
    page.goto(f"{site.url}/models/demo/clf/versions/0.2.0")
    assert page.locator("#actions, #promote").count() == 0
    csrf = page.get_attribute("meta[name=csrf-token]", "content")
    for path, form in (
        ("promote", {"version": "0.2.0", "alias": "prod"}),
        ("rollback", {"alias": "prod"}),
        ("approve", {"version": "0.2.0", "alias": "prod"}),
    ):
        response = page.request.post(
            f"{site.url}/models/demo/clf/{path}", form={**form, "csrf_token": csrf}, max_redirects=0
        )
        assert response.status == 403, (path, response.status)
    page.goto(f"{site.url}/models/demo/clf/promote?version=0.2.0&alias=prod")
    assert page.locator("#confirm").count() == 0
    page.goto(f"{site.url}/models/demo/clf")
    assert page.locator("section[data-alias=prod] h3").inner_text() == "prod → 0.1.0"


def test_a_post_without_the_csrf_token_is_refused(page: Any, versions: Site) -> None:
    site = versions
    if not (has_sign_in(site) and hasattr(session, "check_csrf")):
        pytest.skip("the session has no CSRF check yet")
    sign_in(page, site, "maintainer")
    response = page.request.post(
        f"{site.url}/models/demo/clf/promote", form={"version": "0.2.0", "alias": "prod"}, max_redirects=0
    )
    assert response.status == 403
    page.goto(f"{site.url}/models/demo/clf")
    assert page.locator("section[data-alias=prod] h3").inner_text() == "prod → 0.1.0"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/models/demo/nope", "no model demo/nope in the registry"),
        ("/models/demo/clf/versions/9.9.9", "9.9.9"),
        ("/models/demo/clf/versions/nightly", "nightly"),
    ],
)
def test_a_missing_model_or_version_is_404(page: Any, site: Site, path: str, message: str) -> None:
    enter(page, site, "reader")
    response = page.goto(site.url + path)
    assert response.status == 404
    assert message in page.locator("body").inner_text()
