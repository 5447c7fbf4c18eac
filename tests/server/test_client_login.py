"""``labvault login URL`` / ``labvault logout`` through the real executable.

A good token is checked and stored (mode 0600) so later commands work through the server without
``LABVAULT_URI``; a rejected token is exit 8, an unreachable server 7, and a server speaking
another API version 2 naming both versions (a tiny fake HTTP server answers /api/v1/version).
"""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.server.conftest import Served, free_port
from tests.server.test_client_data import client_env, run

# The team-vault half runs with LABVAULT_TEST_FULL=1 (test_client_data and test_api cross it by default).
TEAM_BY_DEFAULT = False


def _credentials(home: Path) -> Path:
    return home / ".config" / "labvault" / "credentials.json"


def test_login_stores_the_token_and_later_commands_use_it(served: Served, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = client_env(home)
    url = served.urls[0]
    out = run(tmp_path, env, "login", url, "--token", served.tokens["writer"]).stdout
    assert out == f"logged in to {url} as writer-user (role writer)\n"
    path = _credentials(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": url, "token": served.tokens["writer"]}

    # No LABVAULT_URI: the stored login names the server.
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("x\n")
    run(tmp_path, env, "data", "add", "login-ds", "d")
    assert "login-ds" in run(tmp_path, env, "data", "list").stdout
    run(tmp_path, env, "fsck", expect=2)

    doc = json.loads(run(tmp_path, env, "logout", "--json").stdout)
    assert doc == {"removed": True, "path": str(path)}
    assert not path.exists()
    assert run(tmp_path, env, "logout").stdout == "not logged in: nothing to remove\n"
    run(tmp_path, env, "data", "list", expect=3)  # no server, and no vault here


def test_login_reads_the_token_from_stdin(served: Served, tmp_path: Path) -> None:
    env = client_env(tmp_path / "home")
    doc = json.loads(run(tmp_path, env, "login", served.urls[0], "--json", stdin=served.tokens["reader"] + "\n").stdout)
    assert doc["user"] == "reader-user"
    assert doc["role"] == "reader"
    assert doc["url"] == served.urls[0]
    assert json.loads(_credentials(tmp_path / "home").read_text())["token"] == served.tokens["reader"]


def test_a_rejected_token_is_exit_8_and_nothing_is_stored(served: Served, tmp_path: Path) -> None:
    env = client_env(tmp_path / "home")
    proc = run(tmp_path, env, "login", served.urls[0], "--token", "lv_bogus_token", expect=8)
    assert "token rejected" in proc.stderr
    assert not _credentials(tmp_path / "home").exists()
    proc = run(tmp_path, env, "login", served.urls[0], stdin="", expect=2)
    assert "no valid token" in proc.stderr


def test_login_to_an_unreachable_server_is_exit_7(tmp_path: Path) -> None:
    env = client_env(tmp_path / "home")
    proc = run(tmp_path, env, "login", f"http://127.0.0.1:{free_port()}", "--token", "t", expect=7)
    assert "cannot reach" in proc.stderr
    assert not _credentials(tmp_path / "home").exists()
    run(tmp_path, env, "login", "ftp://example.com", "--token", "t", expect=2)


class _OtherVersion(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"api": "2", "labvault": "9.0.0"}).encode()
        if self.path != "/api/v1/version":
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_version_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherVersion)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_of_another_api_version_is_exit_2_naming_both(other_version_server: str, tmp_path: Path) -> None:
    env = client_env(tmp_path / "home")
    proc = run(tmp_path, env, "login", other_version_server, "--token", "t", expect=2)
    assert "API v2" in proc.stderr
    assert "v1" in proc.stderr
    assert not _credentials(tmp_path / "home").exists()
    env = client_env(tmp_path / "home", other_version_server, "t")
    assert "API v2" in run(tmp_path, env, "data", "list", expect=2).stderr
