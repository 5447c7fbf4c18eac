"""A labvault server as a remote of ``labvault remote status``, and as the remote ``data checkout`` and
``get`` fetch from, with the real executable against the real server (SQLite; the team vault with
``LABVAULT_TEST_FULL=1``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.server.conftest import Served, free_port
from tests.server.test_client_remote import _dataset, _doc, _project, _tree_bytes, lv

TEAM_BY_DEFAULT = False  # push and pull already cross the team vault; status and fetch reuse their routes


def _log(served: Served) -> list[str]:
    return served.procs[0].log_path.read_text().splitlines()  # type: ignore[attr-defined]


def _writes(lines: list[str]) -> list[str]:
    """Requests that store something on the server: object uploads and pushed records."""
    return [
        line
        for line in lines
        if ('"PUT"' in line and "/api/v1/objects/" in line)
        or ('"POST"' in line and ('"/api/v1/objects/batch"' in line or '"/api/v1/transfer/records"' in line))
    ]


def test_status_with_a_server_remote_before_and_after_a_push(served: Served, tmp_path: Path) -> None:
    url = served.urls[0]
    mine = _project(tmp_path / "a" / "proj", url)
    _dataset(mine, "st", files=3, salt="status")
    _dataset(mine, "solo", files=1, salt="solo")
    reader = served.tokens["reader"]
    seen = len(_log(served))

    before = _doc(lv(mine, "remote", "status", "--json", token=reader))
    assert sorted(before["remote_lacks"]["records"]) == ["data:solo@v1", "data:st@v1"]
    assert before == {
        "remote": "team",
        "url": url,
        "remote_has_vault": True,
        "remote_lacks": {"records": before["remote_lacks"]["records"], "objects": 0},
        "here_lacks": {"records": [], "objects": 0},
        "in_sync": False,
    }
    assert _writes(_log(served)[seen:]) == []  # a status writes nothing on the server

    lv(mine, "push", "data:st@v1", token=served.tokens["writer"])
    after = _doc(lv(mine, "remote", "status", "team", "data:st@v1", "--json", token=reader))
    assert after["in_sync"] is True
    assert after["remote_lacks"] == after["here_lacks"] == {"records": [], "objects": 0}
    # A REF the server lacks, given with no remote name.
    solo = _doc(lv(mine, "remote", "status", "data:solo@v1", "--json", token=reader))
    assert solo["remote_lacks"] == {"records": ["data:solo@v1"], "objects": 0}
    assert solo["here_lacks"] == {"records": [], "objects": 0}
    shown = lv(mine, "remote", "status", token=reader).stdout
    assert f"remote team ({url})" in shown
    assert "the remote lacks: data:solo@v1" in shown

    lv(mine, "push", token=served.tokens["writer"])
    assert "in sync" in lv(mine, "remote", "status", token=reader).stdout

    # A fresh vault that has only the lock: this vault lacks the records, the server nothing; and
    # the status pulled nothing.
    fresh = _project(tmp_path / "b" / "proj", url)
    shutil.copy(mine / "labvault.lock", fresh / "labvault.lock")
    there = _doc(lv(fresh, "remote", "status", "--json", token=reader))
    assert sorted(there["here_lacks"]["records"]) == ["data:solo@v1", "data:st@v1"]
    assert there["remote_lacks"] == {"records": [], "objects": 0}
    shown = lv(fresh, "remote", "status", token=reader).stdout
    assert "this vault lacks: data:" in shown
    assert "the remote lacks nothing" in shown
    assert not (fresh / "data").exists()
    assert _doc(lv(fresh, "remote", "status", "--json", token=reader)) == there  # nothing was pulled


def test_checkout_and_get_fetch_from_a_server_default_remote(served: Served, tmp_path: Path) -> None:
    url = served.urls[0]
    mine = _project(tmp_path / "a" / "proj", url)
    _dataset(mine, "co", files=5, salt="checkout", size=2000)
    lv(mine, "push", token=served.tokens["writer"])

    fresh = _project(tmp_path / "b" / "proj", url)
    shutil.copy(mine / "labvault.lock", fresh / "labvault.lock")
    lv(fresh, "data", "checkout", token=served.tokens["reader"])  # no pull first: checkout fetches
    assert _tree_bytes(fresh / "data" / "co") == _tree_bytes(mine / "data" / "co")
    lv(fresh, "fsck")

    other = _project(tmp_path / "c" / "proj", url)
    lv(other, "get", "data:co@v1", "-o", "out", "--flat", token=served.tokens["reader"])
    assert _tree_bytes(other / "out") == _tree_bytes(mine / "data" / "co")
    seen = len(_log(served))
    lv(other, "get", "data:co@v1", "-o", "again", "--flat", token=served.tokens["reader"])
    assert not any("/api/v1/" in line for line in _log(served)[seen:])  # everything is here: no request


def test_bad_input_with_a_server_remote(served: Served, tmp_path: Path) -> None:
    mine = _project(tmp_path / "a" / "proj", served.urls[0])
    reader = served.tokens["reader"]
    for args in (("remote", "status", "team", "data:nowhere@v1"), ("data", "checkout", "data:nowhere@v1", "x")):
        bad = lv(mine, *args, token=reader, expect=3)
        assert bad.stderr.startswith("error: ")
        assert "data:nowhere@v1" in bad.stderr
        assert len(bad.stderr.splitlines()) == 2, bad.stderr

    away = _project(tmp_path / "b" / "proj", f"http://127.0.0.1:{free_port()}")
    _dataset(away, "raw", files=1)
    for args in (("remote", "status"), ("data", "checkout", "data:x@v1")):
        bad = lv(away, *args, token=reader, expect=7)
        assert "cannot reach the server" in bad.stderr
        assert len(bad.stderr.splitlines()) == 2, bad.stderr
