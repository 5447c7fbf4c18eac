"""A process that works through a server starts light: ``lv.start_run`` imports neither the local
vault's metadata layer (SQLAlchemy, Alembic), nor the server's libraries, nor httpx's command-line
tool; the commands do not import the metadata layer.

Real processes: the server is ``labvault server``, the training script and the CLI run as
subprocesses, and what they imported is read from ``sys.modules`` or ``python -X importtime``.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import LABVAULT
from tests.server.conftest import Served, clean_env

# The import set does not depend on the server's backend: the team-vault half runs with LABVAULT_TEST_FULL=1.
TEAM_BY_DEFAULT = False

# What the local metadata layer and the server are built on, and httpx's command-line tool (which
# httpx's root imports when it can): the client path needs none of it.
HEAVY = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "pydantic", "click", "rich", "pygments")

TRAIN = """
import json, sys
import labvault as lv

with lv.start_run(project="startup", name="light", config="params.yaml", seed=7) as run:
    run.log_param("depth", 4)
    run.set_tag("stage", "try")
    run.log_metric("loss", 0.5)
    run.log_artifact("model.bin")
    run.flush()
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
print(json.dumps({{"run": run.id, "heavy": heavy}}))
"""


def _client(served: Served, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text("lr: 0.1\n")
    (work / "model.bin").write_bytes(b"weights")
    home = tmp_path / "home"
    env = clean_env()
    env.update(
        LABVAULT_URI=served.urls[0],
        LABVAULT_TOKEN=served.tokens["writer"],
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
    )
    return work, env


def _imported_by(args: list[str], cwd: Path, env: dict[str, str]) -> set[str]:
    """Top-level packages the real executable imports, read from ``python -X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", LABVAULT, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "labvault.client.transport" in names  # the measurement itself: the command went through the server
    return {name.split(".")[0] for name in names}


def test_start_run_through_a_server_imports_no_metadata_layer(served: Served, tmp_path: Path) -> None:
    work, env = _client(served, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN.format(heavy=HEAVY)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["heavy"] == []
    # the run really went through the server, and everything it logged arrived
    run = served.client("reader").get(f"/runs/{out['run']}").json()
    assert run["status"] == "finished"
    assert run["params"]["depth"] == 4
    assert run["tags"]["stage"] == "try"
    assert run["metrics"]["loss"] == 0.5
    assert [a["name"] for a in run["artifacts"]] == ["model.bin"]


def test_read_commands_through_a_server_import_no_metadata_layer(served: Served, tmp_path: Path) -> None:
    work, env = _client(served, tmp_path)
    subprocess.run([sys.executable, "-c", TRAIN.format(heavy=HEAVY)], cwd=work, env=env, check=True, timeout=120)
    for args in (["runs", "list"], ["runs", "list", "--json"]):
        assert not _imported_by(args, work, env) & {"sqlalchemy", "alembic"}, args


def test_transports_share_one_tls_context_and_plain_http_trusts_no_certificate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from labvault.client.settings import ServerTarget
    from labvault.client.transport import Transport, _tls_context

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    _tls_context.cache_clear()
    with Transport(ServerTarget("https://a.example", None)), Transport(ServerTarget("HTTPS://b.example", None)):
        pass
    assert _tls_context.cache_info().misses == 1  # the CA bundle was loaded once for both
    https = _tls_context(True, None, None)
    assert https.verify_mode == ssl.CERT_REQUIRED
    assert https.check_hostname
    assert https.cert_store_stats()["x509_ca"] > 0  # what httpx loads by default
    plain = _tls_context(False, None, None)
    assert plain.verify_mode == ssl.CERT_REQUIRED
    assert plain.check_hostname
    assert plain.cert_store_stats()["x509_ca"] == 0  # verifies and trusts nothing: TLS through it always fails
