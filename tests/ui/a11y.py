"""Accessibility checks for the web UI: axe-core run inside the page, serious and critical violations fail.

``check_a11y(page)`` loads the vendored ``vendor/axe.min.js`` into the page (tests only: the server
never serves it), runs the WCAG 2 A and AA rules on the page as it is now, and fails the test with one line per
violation (rule, impact, what it means, the elements that break it). Minor and moderate findings are
returned, not failed, so that a test can look at them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
FAILING = ("serious", "critical")
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

_RUN = """
async (tags) => {
  const result = await axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]});
  return result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 10),
  }));
}
"""


def violations(page: Any) -> list[dict[str, Any]]:
    """Every axe violation on ``page`` (WCAG 2.1 A and AA rules), as ``{id, impact, help, nodes}``."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol, not as a <script> tag: the pages' strict
        # Content-Security-Policy blocks inline scripts, and the check must not loosen it.
        kind = page.evaluate(AXE.read_text(encoding="utf-8") + "\n;typeof window.axe")
        assert kind == "object", f"axe-core did not load into {page.url}: typeof axe is {kind}"
    found: list[dict[str, Any]] = page.evaluate(_RUN, TAGS)
    return found


def check_a11y(page: Any) -> list[dict[str, Any]]:
    """Fail on serious or critical violations, listing them; return the lesser ones."""
    found = violations(page)
    bad = [v for v in found if v["impact"] in FAILING]
    if bad:
        lines = [f"{v['id']} ({v['impact']}): {v['help']} -> {', '.join(v['nodes'])}" for v in bad]
        pytest.fail(f"accessibility violations on {page.url}:\n" + "\n".join(lines), pytrace=False)
    return [v for v in found if v["impact"] not in FAILING]
