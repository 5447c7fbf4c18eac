"""``vault.remotes`` with a server remote from Python: ``labvault.open()`` reaches the server through the
client layer, as the CLI does; ``Vault.open()`` (the vault alone) refuses it with a hint. Real imports,
in a subprocess, against the real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.server.conftest import Served
from tests.server.test_client_remote import _dataset, _doc, _env, _project, _tree_bytes, lv

SCRIPT = """\
import json, sys
import labvault as lv
vault = lv.open(".")
before = vault.remotes.status().to_json()
fetched = vault.remotes.fetch()
after = vault.remotes.status(remote="team").to_json()
print(json.dumps({"before": before, "fetched": fetched, "after": after}))
"""

REFUSED = """\
from labvault.errors import ValidationError
from labvault.vault import Vault
try:
    Vault.open(".").remotes.status()
except ValidationError as exc:
    print(exc.exit_code, exc.hint)
"""


def _python(cwd: Path, code: str, token: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=_env(cwd.parent, token), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_status_and_fetch_with_a_server_remote_from_python(served: Served, tmp_path: Path) -> None:
    url = served.urls[0]
    mine = _project(tmp_path / "a" / "proj", url)
    _dataset(mine, "py", files=4, salt="python", size=1000)
    lv(mine, "push", token=served.tokens["writer"])

    fresh = _project(tmp_path / "b" / "proj", url)
    shutil.copy(mine / "labvault.lock", fresh / "labvault.lock")
    cli_status = _doc(lv(fresh, "remote", "status", "--json", token=served.tokens["reader"]))
    doc = json.loads(_python(fresh, SCRIPT, served.tokens["reader"]).stdout)
    assert doc["before"] == cli_status  # the same answer as `labvault remote status`
    assert doc["before"]["here_lacks"]["records"] == ["data:py@v1"]
    assert doc["fetched"] == 5  # the four files and their tree
    assert doc["after"]["in_sync"] is True
    lv(fresh, "data", "checkout", token=served.tokens["reader"])
    assert _tree_bytes(fresh / "data" / "py") == _tree_bytes(mine / "data" / "py")

    refused = _python(fresh, REFUSED, served.tokens["reader"]).stdout.split(maxsplit=1)
    assert refused[0] == "2"
    assert "labvault.open()" in refused[1]
