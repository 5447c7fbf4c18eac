"""Filtering runs by their data inputs, on SQLite and PostgreSQL: ``=``/``like``/``in`` match when
any input matches; ``!=``/``not like``/``not in`` when none does."""

from __future__ import annotations

from pathlib import Path

import pytest

from labvault.errors import ValidationError
from labvault.vault import Vault


@pytest.fixture
def named(any_vault: Vault, project: Path) -> Vault:
    for name, versions in (("transactions", 2), ("users", 1)):
        for v in range(versions):
            (project / f"{name}.csv").write_text(f"a\n{v}\n")
            any_vault.data.add(name, project / f"{name}.csv")
    for run_name, inputs in (
        ("t1", ["data:transactions@v1"]),
        ("t2u", ["data:transactions@v2", "data:users@v1"]),
        ("u", ["data:users@v1"]),
        ("none", []),
    ):
        run = any_vault.runs.create(name=run_name, inputs=inputs, capture=False, background_git=False)
        any_vault.runs.finish(run.id)
    return any_vault


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("inputs = 'data:transactions@v1'", {"t1"}),
        ("inputs = 'data:users@v1'", {"t2u", "u"}),
        ("inputs != 'data:users@v1'", {"t1", "none"}),
        ("inputs like 'data:transactions@%'", {"t1", "t2u"}),
        ("inputs not like 'data:transactions@%'", {"u", "none"}),
        ("inputs in ('data:transactions@v1', 'data:users@v1')", {"t1", "t2u", "u"}),
        ("inputs not in ('data:transactions@v1', 'data:users@v1')", {"none"}),
        ("not inputs = 'data:transactions@v2' and inputs like 'data:%'", {"t1", "u"}),
        ("inputs like 'DATA:%'", set()),  # case-sensitive, as everywhere
        ("inputs = 'data:transactions'", set()),  # a run names exact versions
    ],
)
def test_inputs_filter(named: Vault, expr: str, expected: set[str]) -> None:
    assert {r.name for r in named.runs.list(filter=expr)} == expected


@pytest.mark.parametrize("expr", ["inputs > 'data:a@v1'", "inputs = 3"])
def test_inputs_compare_only_as_text(named: Vault, expr: str) -> None:
    with pytest.raises(ValidationError, match="inputs"):
        named.runs.list(filter=expr)
