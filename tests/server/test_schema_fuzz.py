"""schemathesis against the server's own OpenAPI schema, with an admin token: no request gets a 500.

Bounded (15 examples per operation, about 20 s); ``LABVAULT_TEST_FULL=1`` runs 100 per operation and
the coverage phase too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import Served, serve

FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"
ST = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
# The same routes on both backends: the team vault in the full run only.
_POSTGRES = pytest.param(
    "team", marks=[pytest.mark.postgres, pytest.mark.skipif(not FULL, reason="LABVAULT_TEST_FULL=1 only")]
)


@pytest.fixture(scope="module", params=["sqlite", _POSTGRES])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(request, tmp_path_factory, request.param)


def test_schemathesis_finds_no_server_error(served: Served) -> None:
    args = [
        ST,
        "run",
        served.urls[0] + "/api/v1/openapi.json",
        "-H",
        f"Authorization: Bearer {served.tokens['admin']}",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "100" if FULL else "15",
        "--phases",
        "coverage,fuzzing" if FULL else "fuzzing",
        "--seed",
        "1",
    ]
    # In the temp folder: schemathesis keeps a cache of what it found in its working directory.
    proc = subprocess.run(args, cwd=served.root.parent, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert " passed" in proc.stdout
