"""The filter language: parsing, semantics on both backends, and injection attempts."""

from __future__ import annotations

import pytest

from labvault.errors import ValidationError
from labvault.services.tracking.filters import FilterSyntaxError, parse_filter, parse_sort
from labvault.vault import Vault


def _make(vault: Vault, name: str, *, params=None, metrics=None, tags=None, status="finished") -> str:
    run = vault.runs.create(name=name, project="fraud", capture=False, tags=tags)
    if params:
        vault.runs.log_params(run.id, params)
    if metrics:
        vault.runs.log_metrics(run.id, [(k, v, 0) for k, v in metrics.items()])
    if status != "running":
        vault.runs.finish(run.id, status=status)
    return run.id


@pytest.fixture
def runs(any_vault: Vault) -> dict[str, str]:
    v = any_vault
    ids = {
        "a": _make(
            v, "a", params={"depth": 4, "optimizer": "adam"}, metrics={"auc": 0.95, "loss": 0.2}, tags={"team": "fraud"}
        ),
        "b": _make(
            v,
            "b",
            params={"depth": "4", "optimizer": "sgd"},
            metrics={"auc": 0.85, "loss": 0.7},
            tags={"team": "Fraud"},
            status="failed",
        ),
        "c": _make(v, "c", params={"depth": 10, "optimizer": "rmsprop"}, metrics={"auc": 0.99, "loss": float("nan")}),
        "d": _make(v, "d_x", params={"depth": 2}, metrics={"auc": float("inf")}),
    }
    # A later step wins: "a" ends with auc 0.97.
    v.runs.log_metrics(ids["a"], [("auc", 0.97, 5)])
    v.runs.close()
    return ids


def _names(vault: Vault, expr: str, **kw) -> set[str]:
    return {r.name for r in vault.runs.list(filter=expr, **kw)}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("metrics.auc > 0.9 and params.depth = 4", {"a"}),
        ("tags.team = 'fraud' or status = 'failed'", {"a", "b"}),
        ("params.optimizer in ('adam', 'sgd') and not metrics.loss > 0.5", {"a"}),
        ("params.depth = 4", {"a", "b"}),  # logged as 4 and as "4"
        ("params.depth = '4'", {"a", "b"}),
        ("params.depth > 3", {"a", "b", "c"}),  # 10 > 3 as numbers, not as text
        ("params.depth < 5 and params.depth >= 2", {"a", "b", "d_x"}),
        ("metrics.auc >= 0.97", {"a", "c"}),  # latest value; infinity never matches
        ("metrics.loss > 0", {"a", "b"}),  # NaN never matches
        ("not metrics.loss > 0", {"c", "d_x"}),  # missing key and NaN: false, negated
        ("metrics.missing > 0", set()),
        ("not metrics.missing > 0", {"a", "b", "c", "d_x"}),
        ("name like 'd\\_%'", {"d_x"}),
        ("name like '_'", {"a", "b", "c"}),
        ("tags.team like 'f%'", {"a"}),  # case-sensitive
        ("tags.team like 'F%'", {"b"}),
        ("params.optimizer not in ('adam')", {"b", "c", "d_x"}),  # not (... in ...): missing keys match
        ("params.optimizer != 'adam'", {"b", "c"}),  # a comparison: a missing key is false
        ("(status = 'failed' or name = 'c') and metrics.auc < 0.9", {"b"}),
        ("NOT (status = 'finished') AND project = 'fraud'", {"b"}),
        ("started > '2000-01-01' and started < '2999-01-01T00:00:00Z'", {"a", "b", "c", "d_x"}),
        ("params.`depth` == 2", {"d_x"}),
        ("attributes.status <> 'finished'", {"b"}),
    ],
)
def test_filters(any_vault: Vault, runs: dict[str, str], expr: str, expected: set[str]) -> None:
    assert _names(any_vault, expr) == expected


@pytest.mark.parametrize(
    "payload",
    [
        "x' OR '1'='1",
        "'; DROP TABLE runs; --",
        "adam') OR 1=1 --",
        '" OR ""="',
    ],
)
def test_injection_is_only_a_value(any_vault: Vault, runs: dict[str, str], payload: str) -> None:
    quoted = "'" + payload.replace("'", "''") + "'"
    assert _names(any_vault, f"params.optimizer = {quoted}") == set()
    assert _names(any_vault, f"name in ({quoted}, 'a')") == {"a"}
    # A key is a bound value too.
    assert _names(any_vault, "params.`x' OR 1=1 --` = 1") == set()
    assert len(any_vault.runs.list()) == 4  # the table is still there


def test_injection_in_raw_text_is_a_syntax_error(any_vault: Vault, runs: dict[str, str]) -> None:
    with pytest.raises(FilterSyntaxError):
        any_vault.runs.list(filter="name = 'a'; DROP TABLE runs")
    assert len(any_vault.runs.list()) == 4


@pytest.mark.parametrize(
    ("expr", "column"),
    [
        ("metrics.auc >", 14),
        ("metrics.auc > 0.9 and", 22),
        ("metrics.auc > 0.9 garbage", 19),
        ("(status = 'x'", 14),
        ("params.a = 'unterminated", 12),
        ("bogus.field = 1", 1),
        ("metrics.auc = 'high'", 15),
        ("status = 3", 10),
        ("metrics.auc like '%'", 13),
        ("", 1),
        ("name in 'a'", 9),
        ("started > 'yesterday'", 11),
        ("name = 'a' $", 12),
    ],
)
def test_syntax_errors_point_at_the_column(expr: str, column: int) -> None:
    with pytest.raises(FilterSyntaxError) as err:
        parse_filter(expr)
    assert err.value.column == column, err.value.message
    assert err.value.exit_code == 2
    lines = err.value.hint.splitlines()
    assert lines[0] == expr
    assert lines[1].index("^") - len("hint: ") == column - 1


def test_sort_and_limit(any_vault: Vault, runs: dict[str, str]) -> None:
    names = [r.name for r in any_vault.runs.list(sort="metrics.auc")]
    assert names[:3] == ["b", "a", "c"]  # the infinite value has no finite latest: last
    names = [r.name for r in any_vault.runs.list(sort="-params.depth")]
    assert names == ["c", "a", "b", "d_x"] or names == ["c", "b", "a", "d_x"]
    assert [r.name for r in any_vault.runs.list(sort="name", limit=2)] == ["a", "b"]
    newest = any_vault.runs.list(limit=1)[0]
    assert newest.name == "d_x"
    assert next(r.name for r in any_vault.runs.list(sort="-started")) == "d_x"
    with pytest.raises(ValidationError):
        parse_sort("metrics.auc desc")
    with pytest.raises(ValidationError):
        parse_sort("nonsense")


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        # Both used to raise RecursionError (a traceback, exit 1).
        ("(" * 5000 + "status = 'x'" + ")" * 5000, "characters long"),
        ("not " * 5000 + "status = 'x'", "characters long"),
        ("(" * 3000 + "status = 'x'" + ")" * 3000, "nested more than 100 deep"),
        ("not " * 2000 + "status = 'x'", "nested more than 100 deep"),
        ("(" * 101 + "status = 'x'" + ")" * 101, "nested more than 100 deep"),
        ("not (" * 51 + "status = 'x'" + ")" * 51, "nested more than 100 deep"),
    ],
)
def test_deep_nesting_is_refused(expr: str, reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_filter(expr)
    assert reason in err.value.message
    assert err.value.exit_code == 2


def test_nesting_up_to_the_limit_parses(any_vault: Vault, runs: dict[str, str]) -> None:
    assert _names(any_vault, "(" * 100 + "name = 'a'" + ")" * 100) == {"a"}
    assert _names(any_vault, "not " * 100 + "name = 'a'") == {"a"}  # an even number of nots


@pytest.mark.parametrize(
    "expr",
    [
        "name = '" + "x" * 10_001 + "'",
        " or ".join(["name = 'a'"] * 1200),
        "name in (" + ",".join(["'a'"] * 1200) + ")",
    ],
)
def test_long_filters_are_refused(any_vault: Vault, expr: str) -> None:
    # Without a bound, SQLite refuses the query (expression tree too large) as a storage error.
    with pytest.raises(ValidationError) as err:
        any_vault.runs.list(filter=expr)
    assert err.value.exit_code == 2
    assert "filter" in err.value.message


def test_the_largest_filter_allowed_runs(any_vault: Vault, runs: dict[str, str]) -> None:
    wide = " or ".join(["params.depth = 1"] * 499 + ["name = 'a'"])
    assert _names(any_vault, wide) == {"a"}
    listed = "name in (" + ",".join(["'zz'"] * 499 + ["'b'"]) + ")"
    assert _names(any_vault, listed) == {"b"}


@pytest.mark.parametrize(
    ("expr", "column"),
    [
        ("name = 'a\udcff'", 10),  # a non-UTF-8 byte from the command line: was a UnicodeEncodeError
        ("params.`k\udcfe` = 1", 10),
        ("name = 'a\x00b'", 10),  # PostgreSQL refuses NUL in text: was a storage error
    ],
)
def test_text_no_database_can_hold_is_refused(any_vault: Vault, runs: dict[str, str], expr: str, column: int) -> None:
    with pytest.raises(FilterSyntaxError) as err:
        any_vault.runs.list(filter=expr)
    assert err.value.column == column
    assert "\\x" in err.value.message


def test_kept_statements_never_mix_up_filters_that_differ_in_one_value(any_vault: Vault, runs: dict[str, str]) -> None:
    """Parsed filters and compiled statements are kept between calls, keyed on every value."""
    cases = [
        ("params.optimizer = 'adam'", {}, {"a"}),
        ("params.optimizer = 'sgd'", {}, {"b"}),
        ("metrics.auc > 0.9", {}, {"a", "c"}),
        ("metrics.auc > 0.98", {}, {"c"}),
        ("metrics.auc > 0.9", {"project": "other"}, set()),
        ("metrics.auc > 0.9", {"limit": 1}, {"c"}),
        ("metrics.auc > 0.9", {"limit": 1, "offset": 1}, {"a"}),
    ]
    for _ in range(2):  # the second round is answered from the kept statements
        for expr, kw, expected in cases:
            assert _names(any_vault, expr, **kw) == expected, (expr, kw)
    later = _make(any_vault, "e", params={"optimizer": "sgd"})
    any_vault.runs.close()
    assert _names(any_vault, "params.optimizer = 'sgd'") == {"b", "e"}  # a statement, never a result
    assert later in {r.id for r in any_vault.runs.list(filter="params.optimizer = 'sgd'")}
