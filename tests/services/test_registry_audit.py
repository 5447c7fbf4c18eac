"""The audit chain: every decision is an event; edits, deletions and truncation are caught."""

from __future__ import annotations

import itertools
import json
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


# -- tampering: what verify catches, and what a head kept elsewhere adds -------------------------
def _head_file(vault: Vault) -> Path:
    return vault.root / ".labvault" / "audit-head"


def _write_head_file(vault: Vault, seq: int, digest: str) -> None:
    _head_file(vault).write_text(f"{seq} sha256:{digest}\n")


def _set_db_head(vault: Vault, seq: int, digest: str) -> None:
    tamper(vault, f"UPDATE vault_meta SET value = '{seq}:{digest}' WHERE key = 'audit_head'")


def _hash_of(vault: Vault, seq: int) -> str:
    return next(e.hash for e in vault.registry.audit.events() if e.seq == seq)


def _rechain(vault: Vault, start: int, *, extra: int = 0) -> str:
    """Rewrite event ``start`` (actor -> mallory) and re-chain every later one, adding ``extra``
    forged events, all with valid hashes; the database head follows. Returns the new last hash."""
    from dataclasses import replace

    from labvault.services.audit import canonical_json

    events = vault.registry.audit.events()
    prev = next((e.hash for e in events if e.seq == start - 1), "0" * 64)
    for e in events:
        if e.seq < start:
            continue
        forged = replace(e, actor="mallory" if e.seq == start else e.actor, prev_hash=prev)
        forged = replace(forged, hash=event_hash(forged))
        with vault.meta.transaction() as conn:
            conn.execute(
                sa.text("UPDATE audit_events SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"a": forged.actor, "p": forged.prev_hash, "h": forged.hash, "s": e.seq},
            )
        prev = forged.hash
    last = events[-1]
    for seq in range(last.seq + 1, last.seq + 1 + extra):
        forged = replace(last, seq=seq, actor="mallory", action="promote", prev_hash=prev, hash="")
        forged = replace(forged, hash=event_hash(forged))
        with vault.meta.transaction() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO audit_events (seq, at, actor, action, subject, before, after, policy_hash, "
                    "details, prev_hash, hash) VALUES (:seq, :at, :actor, :action, :subject, :before, :after, "
                    ":policy_hash, :details, :prev_hash, :hash)"
                ),
                {
                    "seq": seq,
                    "at": forged.at,
                    "actor": forged.actor,
                    "action": forged.action,
                    "subject": forged.subject,
                    "before": forged.before,
                    "after": forged.after,
                    "policy_hash": forged.policy_hash,
                    "details": canonical_json(forged.details),
                    "prev_hash": forged.prev_hash,
                    "hash": forged.hash,
                },
            )
        prev = forged.hash
    _set_db_head(vault, last.seq + extra, prev)
    return prev


def _legitimate_write(vault: Vault) -> None:
    vault.registry.approve("fraud/detector@0.1.0", "staging")


TAMPERING = {
    "an edited field": (lambda v: tamper(v, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 4"), "altered"),
    "edited details": (lambda v: tamper(v, "UPDATE audit_events SET details = '{}' WHERE seq = 6"), "altered"),
    "details re-spaced (same JSON value)": (
        lambda v: tamper(v, "UPDATE audit_events SET details = ' ' || details WHERE seq = 5"),
        "altered",
    ),
    "details with a duplicate key (same JSON value)": (
        lambda v: tamper(v, 'UPDATE audit_events SET details = \'{"alias":"x",\' || substr(details, 2) WHERE seq = 4'),
        "altered",
    ),
    "a deleted event": (lambda v: tamper(v, "DELETE FROM audit_events WHERE seq = 3"), "missing"),
    "the first event deleted": (lambda v: tamper(v, "DELETE FROM audit_events WHERE seq = 1"), "missing"),
    "the last event deleted": (lambda v: tamper(v, "DELETE FROM audit_events WHERE seq = 7"), "truncated"),
    "truncated, database head rewritten": (
        lambda v: (tamper(v, "DELETE FROM audit_events WHERE seq >= 6"), _set_db_head(v, 5, _hash_of(v, 5))),
        "head file records event #7",
    ),
    "the last event rewritten, database head too": (lambda v: _rechain(v, 7), "differs from the one the head file"),
    "a middle event rewritten and the rest re-chained": (lambda v: _rechain(v, 3), "differs from the one the head"),
    "re-chained, head file set back to an intact event": (
        lambda v: (_rechain(v, 3), _write_head_file(v, 2, _hash_of(v, 2))),
        "lags at most one",
    ),
    "head file set back two events": (lambda v: _write_head_file(v, 5, _hash_of(v, 5)), "lags at most one"),
    "two forged events appended, database head too": (lambda v: _rechain(v, 8, extra=2), "lags at most one"),
    "two events swapped": (
        lambda v: (
            tamper(v, "UPDATE audit_events SET seq = 100 WHERE seq = 2"),
            tamper(v, "UPDATE audit_events SET seq = 2 WHERE seq = 3"),
            tamper(v, "UPDATE audit_events SET seq = 3 WHERE seq = 100"),
        ),
        "does not chain",
    ),
    "the last event rewritten, then a legitimate write": (
        lambda v: (_rechain(v, 7), _legitimate_write(v)),
        "differs from the one the head file",
    ),
    "re-chained from the middle, then two legitimate writes": (
        lambda v: (_rechain(v, 3), _legitimate_write(v), v.registry.approve("fraud/detector@0.1.0", "dev")),
        "differs from the one the head file",
    ),
    "an unreadable head file": (lambda v: _head_file(v).write_text("garbage\n"), "unreadable"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_is_caught(any_vault: Vault, project: Path, case: str) -> None:
    """17 ways to tamper with the log, some rewriting the database head or the head file as well."""
    vault = any_vault
    history(vault, project)
    assert vault.registry.verify_audit().ok
    change, expected = TAMPERING[case]
    change(vault)
    report = vault.registry.verify_audit()
    assert not report.ok, f"{case}: not caught"
    assert any(expected in p for p in report.problems), report.problems


def test_a_head_kept_elsewhere_catches_a_history_forged_with_both_heads(vault: Vault, project: Path) -> None:
    """With write access to the database and the head file, a rewritten history verifies; an anchor does not."""
    history(vault, project)
    anchor = f"7 sha256:{_hash_of(vault, 7)}"
    saved = project / "head.json"
    saved.write_text(json.dumps({"ok": True, "events": 7, "head": vault.registry.verify_audit().head}))
    _legitimate_write(vault)
    for against in (anchor, anchor.split(" ")[1], str(saved)):
        report = vault.registry.verify_audit(against=against)
        assert report.ok, report.problems
        assert any("events #1..#7 match the anchored head" in n for n in report.notes)
    new_head = _rechain(vault, 3)
    _write_head_file(vault, 8, new_head)
    assert vault.registry.verify_audit().ok  # the documented limit: both heads rewritten
    assert "event #7 differs from the anchored head" in vault.registry.verify_audit(against=anchor).problems[0]
    assert "not an event of the chain" in vault.registry.verify_audit(against=anchor.split(" ")[1]).problems[0]
    assert not vault.registry.verify_audit(against=str(saved)).ok


def test_an_anchor_beyond_the_log_is_a_truncation(vault: Vault, project: Path) -> None:
    history(vault, project)
    anchor = f"7 sha256:{_hash_of(vault, 7)}"
    tamper(vault, "DELETE FROM audit_events WHERE seq >= 6")
    _set_db_head(vault, 5, _hash_of(vault, 5))
    _write_head_file(vault, 5, _hash_of(vault, 5))
    assert vault.registry.verify_audit().ok
    report = vault.registry.verify_audit(against=anchor)
    assert report.first_bad == 6
    assert "anchored head records event #7" in report.problems[0]


@pytest.mark.parametrize("text", ["", "7", "sha256:abc", "7 sha256:" + "g" * 64, "no-such-file.json"])
def test_a_malformed_anchor_is_refused(vault: Vault, text: str) -> None:
    from labvault.errors import ValidationError

    with pytest.raises(ValidationError, match="not an audit head"):
        vault.registry.verify_audit(against=text)


def test_one_forged_event_appended_reads_as_a_lagging_head_file(vault: Vault, project: Path) -> None:
    """The documented limit of the head file: one event appended with database access alone."""
    history(vault, project)
    _rechain(vault, 8, extra=1)
    report = vault.registry.verify_audit()
    assert report.ok
    assert "lags one event" in report.notes[0]


def test_an_append_brings_a_lagging_head_file_up_first(vault: Vault, project: Path) -> None:
    """A writer that died between its commit and the file write leaves it one behind; the next
    append catches it up before adding its own event, so it never falls two behind."""
    history(vault, project)
    _write_head_file(vault, 6, _hash_of(vault, 6))  # as a crash after committing #7 leaves it
    with vault.meta.transaction() as conn:
        head = vault.registry.audit.lock(conn)
        assert _head_file(vault).read_text().startswith(f"7 sha256:{head[1]}")
        event = vault.registry.audit.append(conn, actor="a", action="approve", subject="x", head=head)
    # this writer dies before its publish: the file lags one, and verify says so without failing
    report = vault.registry.verify_audit()
    assert report.ok, report.problems
    assert event.seq == 8
    assert "lags one event, at #7" in report.notes[0]


def test_a_removed_head_file_is_recreated_by_the_next_write(vault: Vault, project: Path) -> None:
    """The documented way back after restoring the database from a backup."""
    history(vault, project)
    _head_file(vault).unlink()
    assert "missing" in vault.registry.verify_audit().problems[0]
    _legitimate_write(vault)
    assert _head_file(vault).read_text().startswith("8 sha256:")
    assert vault.registry.verify_audit().ok
