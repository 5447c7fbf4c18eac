"""The sqlite3 reader answers exactly as the repos do, or not at all."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import labvault as lv
from labvault.services.tracking.filters import parse_filter, parse_sort
from labvault.storage.meta.lean import open_reader
from labvault.vault import Vault


def test_reader_steps_aside_when_it_cannot_answer_exactly(vault: Vault, tmp_path: Path) -> None:
    with open_reader("mysql://x@127.0.0.1/x", vault.dir) as reader:
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


FILTERS = [
    "metrics.auc > 0.3 and not params.depth in (1, 'x')",
    "name like 'R%' or tags.team like 'r_sk'",
    "inputs = 'data:d@v1' or user = 'nobody'",
    "not not ended > '2000-01-01'",
]
SORTS = [None, "-metrics.auc", "params.depth", "-tags.team", "name"]


def test_filtered_run_ids_match_the_repos_on_both_databases(any_vault: Vault, project: Path) -> None:
    (project / "d").mkdir()
    (project / "d" / "f").write_text("x")
    any_vault.data.add("d", project / "d")
    for i in range(9):
        with lv.start_run(name=f"r{i}", inputs=["data:d@v1"] if i % 2 else []) as run:
            run.log_params({"depth": [1, 2, "x"][i % 3]})
            run.log_metrics({"auc": i / 8 if i != 4 else float("nan")})
            run.set_tags({"team": ["risk", "RISK", "ops"][i % 3]})
    database_url = any_vault.config.database_url
    for text in FILTERS:
        for sort in SORTS:
            expected = [r.id for r in any_vault.runs.list(filter=text, sort=sort, limit=7)]
            with open_reader(database_url, any_vault.dir) as reader:
                assert reader is not None
                where, order = parse_filter(text), parse_sort(sort) if sort else None
                found = reader.select_runs(project=None, limit=7, deleted=False, where=where, sort=order)
                assert [r.id for r in found] == expected, (text, sort)
                assert found == reader.runs(expected)
    assert expected  # the filters select something


@pytest.mark.postgres
def test_reader_steps_aside_on_an_unreachable_or_unmigrated_postgresql(pg_vault: Vault, pg_url: str) -> None:
    with open_reader("postgresql://nobody@127.0.0.1:1/none", pg_vault.dir) as reader:
        assert reader is None
    with open_reader(pg_vault.config.database_url, pg_vault.dir) as reader:
        assert reader is not None
    with pg_vault.meta.transaction() as conn:
        conn.exec_driver_sql("UPDATE vault_meta SET value = 'old' WHERE key = 'schema_revisions'")
    with open_reader(pg_vault.config.database_url, pg_vault.dir) as reader:
        assert reader is None
