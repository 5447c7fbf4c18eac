"""The web UI in a real browser: Debian's Chromium driven by Playwright (``executable_path``, no download).

``site`` is one seeded vault per test module served by the real ``labvault server`` with a token per role:
two datasets versions (``data:tx@v1``, ``@v2``, a CSV whose ``amount`` column drifts), three runs of
project ``demo`` with params, metric histories, an artifact and the dataset as input, and the model
``demo/clf`` registered from the best run with ``prod`` pointing at it. Without Chromium the tests skip
with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import ROLES, clean_env, lv, start_server, stop_server

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_SEED = textwrap.dedent(
    """
    import json, sys
    import labvault as lv

    ids = []
    for i, lr in enumerate([0.1, 0.03, 0.01]):
        with lv.start_run(project="demo", name=f"train-{i}", inputs=["data:tx@v1"], seed=7) as run:
            run.log_params({"lr": lr, "depth": 4 + i})
            run.set_tag("team", "fraud")
            for step in range(50):
                run.log_metric("loss", 1.0 / (1 + step * lr * 10), step=step)
            run.log_metric("auc", 0.8 + i * 0.05)
            run.log_text(f"model weights {i}", "weights.txt")
            ids.append(run.ref)
    print(json.dumps(ids))
    """
)


@dataclass
class Site:
    """A served, seeded vault: ``url``, a token per role, and what the seed made."""

    root: Path
    url: str
    tokens: dict[str, str]
    runs: list[str]
    procs: list[Any] = field(default_factory=list)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _seed(root: Path) -> list[str]:
    lv(root, "init")
    data = root / "data"
    data.mkdir()
    rows = "\n".join(f"{i},{i * 1.5:.2f},{'a' if i % 2 else 'b'}" for i in range(200))
    (data / "tx.csv").write_text("id,amount,kind\n" + rows + "\n")
    lv(root, "data", "add", "tx", "data", "-q")
    rows = "\n".join(f"{i},{i * 3.5 + 40:.2f},{'a' if i % 3 else 'b'}" for i in range(260))
    (data / "tx.csv").write_text("id,amount,kind\n" + rows + "\n")
    lv(root, "data", "add", "tx", "data", "-q")
    script = root / "seed_runs.py"
    script.write_text(_SEED)
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(script)], cwd=root, env=clean_env(), capture_output=True, text=True, check=True
    )
    runs: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    lv(root, "models", "register", "demo/clf", "--from", runs[2], "--artifact", "weights.txt", "-q")
    lv(root, "models", "promote", "demo/clf@0.1.0", "--to", "prod", "--waive-rollback-plan", "first release")
    return runs


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("ui") / "proj"
    root.mkdir()
    runs = _seed(root)
    from labvault.vault import Vault

    with Vault.open(root) as vault:
        tokens = {role: vault.access.create_token(f"{role}-user", role=role)[1] for role in ROLES}
    proc, url = start_server(root)
    try:
        yield Site(root=root, url=url, tokens=tokens, runs=runs, procs=[proc])
    finally:
        log = stop_server(proc)
    assert "Traceback" not in log, log


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is not installed: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium is not installed (apt-get install chromium): the web UI tests need a real browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; failures print the browser console."""
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()


def sign_in(page: Any, site: Site, role: str = "admin") -> None:
    """Sign in through the login page with the ``role`` token."""
    page.goto(f"{site.url}/login")
    page.fill("input[name=token]", site.tokens[role])
    page.click("button[type=submit]")
    page.wait_for_load_state()
