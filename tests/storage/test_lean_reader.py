"""The sqlite3 reader answers exactly as the repos do, or not at all."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from labvault.storage.meta.lean import open_reader
from labvault.vault import Vault


def test_reader_steps_aside_when_it_cannot_answer_exactly(vault: Vault, tmp_path: Path) -> None:
    with open_reader("postgresql://postgres@127.0.0.1/x", vault.dir) as reader:
        assert reader is None
    with open_reader(None, tmp_path) as reader:  # no meta.db
        assert reader is None
    vault.runs.list()  # the database exists, migrated
    with open_reader(None, vault.dir) as reader:
        assert reader is not None
    with sqlite3.connect(vault.dir / "meta.db") as conn:
        conn.execute("UPDATE vault_meta SET value = value || ',9999_future' WHERE key = 'schema_revisions'")
    with open_reader(None, vault.dir) as reader:
        assert reader is None


def test_audit_subject_prefix_matches_as_the_repo_does(vault: Vault) -> None:
    vault.runs.list()
    subjects = ["a_b/m@1", "axb/m@1", "a%c/m", "A_B/x", "a/b", "a//b"]
    with sqlite3.connect(vault.dir / "meta.db") as conn:
        for seq, subject in enumerate(subjects, start=1):
            conn.execute(
                "INSERT INTO audit_events (seq, at, actor, action, subject, details, prev_hash, hash)"
                " VALUES (?, '2026-11-30 00:00:00.000001', 'me', 'register', ?, '{}', 'p', 'h')",
                (seq, subject),
            )
    for prefix in ["a_", "a%", "A_", "a/", "a//", "", "zz"]:
        expected = vault.registry.audit.events(subject_prefix=prefix, newest_first=True)
        with open_reader(None, vault.dir) as reader:
            assert reader is not None
            assert reader.audit_events(subject_prefix=prefix, action=None, limit=None) == expected, prefix
