"""The audit chain: every decision is an event; edits, deletions and truncation are caught."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import sqlalchemy as sa

from labvault.services.audit import event_hash
from labvault.vault import Vault
from tests.services.test_registry import make_model


def history(vault: Vault, project: Path) -> None:
    model = make_model(project)
    vault.registry.register("fraud/detector", model)
    (model / "model.bin").write_bytes(b"v2")
    vault.registry.register("fraud/detector", model)
    vault.registry.approve("fraud/detector@0.1.1", "prod")
    vault.registry.promote("fraud/detector@0.1.0", "prod")
    vault.registry.promote("fraud/detector@0.1.1", "prod")
    vault.registry.rollback("fraud/detector", "prod")
    vault.registry.archive("fraud/detector@0.1.1")


def tamper(vault: Vault, sql: str) -> None:
    with vault.meta.transaction() as conn:
        conn.execute(sa.text(sql))


def test_every_decision_is_a_chained_event(any_vault: Vault, project: Path) -> None:
    history(any_vault, project)
    events = any_vault.registry.audit.events()
    assert [e.action for e in events] == [
        "register",
        "register",
        "approve",
        "promote",
        "promote",
        "rollback",
        "archive",
    ]
    assert [e.seq for e in events] == list(range(1, 8))
    assert events[0].prev_hash == "0" * 64
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    for e in events:
        assert event_hash(e) == e.hash
        assert e.actor == "tester@example.com"
    promote = events[4]
    assert (promote.subject, promote.before, promote.after) == ("fraud/detector@prod", "0.1.0", "0.1.1")
    report = any_vault.registry.verify_audit()
    assert report.ok, report.problems
    assert report.events == 7
    assert (project / ".labvault" / "audit-head").read_text().startswith("7 sha256:")


def test_an_edited_event_is_named(any_vault: Vault, project: Path) -> None:
    history(any_vault, project)
    tamper(any_vault, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 4")
    report = any_vault.registry.verify_audit()
    assert not report.ok
    assert report.first_bad == 4
    assert "event #4 (promote fraud/detector@prod) was altered" in report.problems[0]


def test_edited_details_are_caught(vault: Vault, project: Path) -> None:
    history(vault, project)
    tamper(vault, "UPDATE audit_events SET details = '{}' WHERE seq = 6")
    report = vault.registry.verify_audit()
    assert report.first_bad == 6


def test_a_deleted_event_is_caught(any_vault: Vault, project: Path) -> None:
    history(any_vault, project)
    tamper(any_vault, "DELETE FROM audit_events WHERE seq = 3")
    report = any_vault.registry.verify_audit()
    assert not report.ok
    assert report.first_bad == 3
    assert "missing" in report.problems[0]


def test_truncation_is_caught_by_the_database_head(vault: Vault, project: Path) -> None:
    history(vault, project)
    tamper(vault, "DELETE FROM audit_events WHERE seq >= 6")
    report = vault.registry.verify_audit()
    assert not report.ok
    assert report.first_bad == 6
    assert "truncated" in report.problems[0]


def test_truncation_with_a_forged_database_head_is_caught_by_the_head_file(vault: Vault, project: Path) -> None:
    history(vault, project)
    with vault.meta.read() as conn:
        h5 = conn.execute(sa.text("SELECT hash FROM audit_events WHERE seq = 5")).scalar_one()
    tamper(vault, "DELETE FROM audit_events WHERE seq >= 6")
    tamper(vault, f"UPDATE vault_meta SET value = '5:{h5}' WHERE key = 'audit_head'")
    report = vault.registry.verify_audit()
    assert not report.ok
    assert "head file records event #7" in report.problems[0]


def test_a_rewritten_tail_is_caught_by_the_head_file(vault: Vault, project: Path) -> None:
    history(vault, project)
    events = vault.registry.audit.events()
    last = events[-1]
    # Rewrite the last event consistently (valid hash, valid chain, database head updated).
    from dataclasses import replace

    forged = replace(last, actor="mallory")
    digest = event_hash(forged)
    tamper(vault, f"UPDATE audit_events SET actor = 'mallory', hash = '{digest}' WHERE seq = {last.seq}")
    tamper(vault, f"UPDATE vault_meta SET value = '{last.seq}:{digest}' WHERE key = 'audit_head'")
    report = vault.registry.verify_audit()
    assert not report.ok
    assert report.first_bad == last.seq


def test_a_lagging_head_file_is_a_note_and_a_missing_one_a_failure(vault: Vault, project: Path) -> None:
    history(vault, project)
    events = vault.registry.audit.events()
    head = project / ".labvault" / "audit-head"
    head.write_text(f"6 sha256:{events[5].hash}\n")
    report = vault.registry.verify_audit()
    assert report.ok
    assert "lags" in report.notes[0]
    head.unlink()
    assert not vault.registry.verify_audit().ok


def test_an_empty_log_verifies(vault: Vault) -> None:
    report = vault.registry.verify_audit()
    assert report.ok
    assert report.events == 0


@pytest.mark.parametrize("action", ["register", "promote"])
def test_failed_operations_leave_no_event(vault: Vault, project: Path, action: str) -> None:
    if action == "register":
        (project / "empty").mkdir()
        with pytest.raises(Exception, match="holds no files"):
            vault.registry.register("fraud/detector", project / "empty")
    else:
        with pytest.raises(Exception, match="no model"):
            vault.registry.promote("fraud/detector@1.0.0", "prod")
    assert vault.registry.audit.events() == []
