"""Containment through a server: a server whose trees are crafted (names that climb out, an absolute
name, a folder named ``..``) makes its clients write nothing outside the folder they write to. The
client checks out and gets through the same decoders and contained writer as a local vault, so
every command stops with exit 5 ("malformed") and the folder outside stays empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labvault.vault import Vault
from tests.e2e.test_containment import _files, point_at_hostile_tree
from tests.server.conftest import lv, start_server, stop_server
from tests.server.test_client_data import client_env, run


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A served vault where ``data:ds@v1`` and ``p/m@0.1.0`` point at an escaping tree: its URL, a
    reader's token and the folder outside that the tree aims at."""
    base = tmp_path_factory.mktemp("hostile")
    root, outside = base / "served", base / "outside"
    root.mkdir()
    outside.mkdir()
    lv(root, "init")
    (root / "ds").mkdir()
    (root / "ds" / "ok.txt").write_text("ok\n")
    lv(root, "data", "add", "ds", "ds")
    (root / "model").mkdir()
    (root / "model" / "w.bin").write_text("w\n")
    lv(root, "models", "register", "p/m", "model")
    point_at_hostile_tree(root / ".labvault", outside)
    with Vault.open(root) as vault:
        token = vault.access.create_token("reader-user", role="reader")[1]
    proc, url = start_server(root)
    try:
        yield url, token, outside
    finally:
        log = stop_server(proc)
    assert "Traceback" not in log, log


@pytest.mark.parametrize(
    "args",
    [
        ("data", "checkout", "data:ds@v1", "dst"),
        ("get", "data:ds@v1", "-o", "dst"),
        ("get", "p/m@0.1.0", "-o", "dst"),
        ("get", "p/m@0.1.0", "-o", "dst", "--flat"),
    ],
)
def test_a_crafted_tree_from_a_server_writes_nothing_outside(
    hostile_server: tuple[str, str, Path], tmp_path: Path, args: tuple[str, ...]
) -> None:
    url, token, outside = hostile_server
    work = tmp_path / "work"
    work.mkdir()
    before = _files(tmp_path, skip=tmp_path / "home")
    out = run(work, client_env(tmp_path / "home", url, token), *args, expect=5)
    assert "malformed" in out.stderr
    new = _files(tmp_path, skip=tmp_path / "home") - before
    assert all(work / "dst" in p.parents for p in new), new
    assert not list(outside.iterdir())


def test_lv_models_get_from_a_crafted_server_writes_nothing_outside(
    hostile_server: tuple[str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import labvault as lv_api
    from labvault import model_api
    from labvault.errors import IntegrityError

    url, token, outside = hostile_server
    monkeypatch.setenv("LABVAULT_URI", url)
    monkeypatch.setenv("LABVAULT_TOKEN", token)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(model_api, "_SERVERS", {})
    try:
        with pytest.raises(IntegrityError, match="malformed"):
            lv_api.models.get("p/m@0.1.0")
    finally:
        model_api._close_servers()
    assert [p for p in _files(tmp_path, skip=tmp_path / "none") if "escape" in p.name] == []
    assert not list(outside.iterdir())
