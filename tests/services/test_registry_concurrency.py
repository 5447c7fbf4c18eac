"""Two processes promoting the same alias at once: one winner, both attempts audited, one history.

Each promotion runs a check that waits until both processes are inside their gates, so both have
read the alias before either commits: a real race, every time, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labvault.vault import Vault
from tests.services.test_registry import make_model

LABVAULT = shutil.which("labvault", path=str(Path(sys.executable).parent)) or "labvault"

BARRIER = textwrap.dedent(
    """\
    import pathlib, sys, time
    me = sys.argv[1]
    pathlib.Path(f"ready-{me}").write_text("")
    deadline = time.monotonic() + 30
    while len(list(pathlib.Path(".").glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    """
)


def _race(vault: Vault, project: Path, *, alias: str = "prod") -> list[subprocess.CompletedProcess[str]]:
    model = make_model(project)
    vault.registry.register("fraud/detector", model)
    (model / "model.bin").write_bytes(b"second")
    vault.registry.register("fraud/detector", model)
    (project / "barrier.py").write_text(BARRIER)
    (project / "labvault.yaml").write_text(
        "models:\n  fraud/detector:\n"
        f"    {alias}:\n      checks:\n        - name: barrier\n"
        f"          run: {sys.executable} barrier.py {{version}}\n          timeout: 60\n"
    )
    procs = []
    for version, user in (("0.1.0", "alice@example.com"), ("0.1.1", "bob@example.com")):
        env = {**os.environ, "LABVAULT_USER": user, "NO_COLOR": "1"}
        procs.append(
            subprocess.Popen(
                [LABVAULT, "models", "promote", f"fraud/detector@{version}", "--to", alias, "-m", user],
                cwd=project,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def _assert_one_winner(vault: Vault, results: list[subprocess.CompletedProcess[str]]) -> None:
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 4], [(r.returncode, r.stderr) for r in results]
    for r in results:
        assert "Traceback" not in r.stderr
    loser = next(r for r in results if r.returncode == 4)
    assert "lost the race" in loser.stderr
    winner = next(r for r in results if r.returncode == 0)
    won_version = "0.1.0" if "fraud/detector@0.1.0" in winner.args else "0.1.1"
    assert vault.registry.resolve("fraud/detector@prod").version == won_version
    moves = vault.registry.history("fraud/detector", "prod")
    assert [(m.action, m.after) for m in moves] == [("promote", won_version)]
    events = [e for e in vault.registry.audit.events() if e.subject == "fraud/detector@prod"]
    assert sorted(e.action for e in events) == ["promote", "refuse"]
    refusal = next(e for e in events if e.action == "refuse")
    assert "lost race" in refusal.details["refused"]
    assert {e.actor for e in events} == {"alice@example.com", "bob@example.com"}
    report = vault.registry.verify_audit()
    assert report.ok, report.problems


def test_concurrent_promotions_sqlite(vault: Vault, project: Path) -> None:
    _assert_one_winner(vault, _race(vault, project))


@pytest.mark.postgres
def test_concurrent_promotions_postgres(pg_vault: Vault, project: Path) -> None:
    _assert_one_winner(pg_vault, _race(pg_vault, project))


@pytest.mark.parametrize("other_version", [None, "0.1.1", "2.0.0"])
def test_a_registration_behind_this_process_s_back_is_seen(
    any_vault: Vault, project: Path, other_version: str | None
) -> None:
    """A process remembers the highest version it registered; another writer's newer one still counts."""
    model = make_model(project)
    assert any_vault.registry.register("fraud/detector", model)[0].version == "0.1.0"
    other = Vault.open(project)
    try:
        (model / "model.bin").write_bytes(b"theirs")
        theirs, _ = other.registry.register("fraud/detector", model, version=other_version)
    finally:
        other.close()
    (model / "model.bin").write_bytes(b"ours")
    ours, created = any_vault.registry.register("fraud/detector", model)
    major, minor, patch = (int(p) for p in theirs.version.split("."))
    assert created
    assert ours.version == f"{major}.{minor}.{patch + 1}"
    assert any_vault.registry.resolve(f"fraud/detector@{ours.version}").content == ours.content
    (model / "model.bin").write_bytes(b"ours again")
    assert any_vault.registry.register("fraud/detector", model)[0].version == f"{major}.{minor}.{patch + 2}"
    assert any_vault.registry.verify_audit().ok


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_concurrent_registrations_get_distinct_versions(
    backend: str, project: Path, request: pytest.FixtureRequest
) -> None:
    """Four processes registering different content at once: four versions, no lost write."""
    vault = request.getfixturevalue("vault" if backend == "sqlite" else "pg_vault")
    folders = []
    for i in range(4):
        folders.append(make_model(project, f"m{i}", weights=f"w{i}".encode()))
    procs = [
        subprocess.Popen(
            [LABVAULT, "models", "register", "fraud/detector", str(f), "--json"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in folders
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    versions = [v.version for v in vault.registry.versions("fraud/detector")]
    assert versions == ["0.1.0", "0.1.1", "0.1.2", "0.1.3"]
    assert vault.registry.verify_audit().ok
