"""A run's params and tags reach Python as one JSON document per run (storage/meta/lean_records.py),
on SQLite and PostgreSQL: every value comes back as it was logged, by every read path."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from labvault.storage.meta.lean_records import LazyJSON
from labvault.storage.meta.tables import run_params, run_tags
from labvault.vault import Vault

PARAMS = {
    "depth": 4,
    "lr": 0.1,
    "tiny": 5e-324,
    "big": 2**62 + 1,
    "name": 'quote " backslash \\ tab \t newline \n',
    "unicode": "été 東京 \U0001f600",
    "flag": True,
    "nothing": None,
    "layers": [64, {"k": [1.5, "x"]}],
    "weird key / with spaces.and-dots": "nan",
    "digits": "007",
}
TAGS = {"team": 'a "quoted" \\ tag', "rank": "2", "empty": "", "a/b c": "東京"}


def _logged(vault: Vault) -> str:
    run = vault.runs.create(name="r", project="p", capture=False, tags=TAGS)
    vault.runs.log_params(run.id, PARAMS)
    vault.runs.log_metrics(run.id, [("auc", 0.5, 0)])
    vault.runs.finish(run.id, status="finished")
    bare = vault.runs.create(name="bare", project="p", capture=False)
    vault.runs.finish(bare.id, status="finished")
    vault.runs.close()
    return run.id


def test_params_and_tags_come_back_as_logged_by_every_read_path(any_vault: Vault) -> None:
    run_id = _logged(any_vault)
    reads = [
        any_vault.runs.get(run_id),
        *[r for r in any_vault.runs.list() if r.id == run_id],
        *any_vault.runs.list(filter="params.depth = 4"),
        *any_vault.runs.list(filter="params.depth = 4", limit=5),
        *any_vault.runs.list(filter="params.depth = 4", sort="-metrics.auc", limit=5),
        *any_vault.runs.list(filter="params.depth = 4", sort="name"),
    ]
    assert len(reads) == 6
    for run in reads:
        assert run.params == PARAMS
        assert type(run.params["depth"]) is int
        assert type(run.params["flag"]) is bool
        assert run.tags == TAGS
    bare = next(r for r in any_vault.runs.list() if r.name == "bare")
    assert (bare.params, bare.tags) == ({}, {})


def test_a_stored_value_that_is_not_json_is_read_row_by_row_as_before(any_vault: Vault) -> None:
    """A record from elsewhere can hold a value labvault would not write: its run's document then does
    not decode, and that run's values are read as they always were."""
    run_id = _logged(any_vault)
    with any_vault.meta.transaction() as conn:
        conn.execute(sa.insert(run_params).values(run_id=run_id, key="odd", value='"a\tb"', text="a\tb", num=None))
        conn.execute(sa.insert(run_tags).values(run_id=run_id, key="z", text="plain", num=None))
    for run in (any_vault.runs.get(run_id), *any_vault.runs.list(filter="params.depth = 4")):
        assert run.params == {**PARAMS, "odd": "a\tb"}  # a raw tab is not JSON; the old decoder took it
        assert run.tags == {**TAGS, "z": "plain"}


def test_a_capture_document_decodes_as_json_loads_would() -> None:
    assert dict(LazyJSON('{"git": {"dirty": false}, "pid": 7}')) == {"git": {"dirty": False}, "pid": 7}
    assert dict(LazyJSON(' \n{"a": [1, 2.5]}  ')) == {"a": [1, 2.5]}  # whitespace around: json.loads takes it
    for text in ('{"a": 1} trailing', '{"a": ', "", "  "):
        with pytest.raises(json.JSONDecodeError) as err:
            len(LazyJSON(text))
        with pytest.raises(json.JSONDecodeError) as expected:
            json.loads(text)
        assert str(err.value) == str(expected.value)
