"""Every page of the web UI against axe-core (WCAG 2.1 A and AA): no serious or critical violation."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.a11y import check_a11y
from tests.ui.conftest import Site, sign_in


@pytest.mark.parametrize(
    "path",
    [
        "/login",
        "/runs",
        "/runs/{run}",
        "/compare?runs={run}&runs={other}",
        "/data",
        "/data/tx",
        "/models",
        "/models/demo/clf",
        "/lineage?ref={run}",
        "/audit",
    ],
)
def test_page_has_no_serious_violation(page: Any, site: Site, path: str) -> None:
    if path != "/login":
        sign_in(page, site, "reader")
    url = site.url + path.format(run=site.runs[0], other=site.runs[1])
    response = page.goto(url)
    assert response is not None
    assert response.status == 200, f"{url}: {response.status}"
    page.wait_for_load_state("networkidle")
    check_a11y(page)
