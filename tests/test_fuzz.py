"""Property-based fuzzing of the decoders that meet untrusted text: references, the filter language,
tree objects and ``labvault.lock``. Each may refuse its input only with a labvault error.

The default run is bounded (about a minute in all); ``LABVAULT_TEST_FULL=1`` runs ten times the examples.
"""

from __future__ import annotations

import contextlib
import json
import os
import string
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from labvault.errors import IntegrityError, LabvaultError, ValidationError
from labvault.refs import MAX_NAME_LENGTH, DataRef, ModelRef, parse_ref, parse_semver, validate_name
from labvault.services.snapshots.lockfile import LOCK_NAME, read_lock
from labvault.services.tracking.filters import MAX_DEPTH, parse_filter, parse_sort
from labvault.storage.meta.run_filter import runs_query
from labvault.storage.objects.tree import TREE_FORMAT, decode_tree
from labvault.vault import Vault

_FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"


def bounded(examples: int) -> settings:
    return settings(
        max_examples=examples * (10 if _FULL else 1),
        deadline=None,  # 2 cores shared by many processes: timing is not the property
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# Text an attacker would try: separators, dots, encodings, controls, look-alikes, and ordinary letters.
_HOSTILE_CHARS = (
    "./\\%2e@:-_ \x00\n\r\t\x7f'\"`()<>=!,*?[]~$" + "\u0430\u0435\uff0e\u2024\u2215\u200b\ud7ff\udcff\u00e9"
)
hostile_text = st.text(st.sampled_from(_HOSTILE_CHARS) | st.characters(), max_size=80)
ascii_text = st.text(string.printable, max_size=80)


def _check_refusal(err: LabvaultError) -> None:
    assert err.exit_code == 2
    assert "\n" not in err.message


# -- references -------------------------------------------------------------------------------------
@bounded(400)
@given(
    st.one_of(hostile_text, ascii_text, hostile_text.map(lambda t: "data:" + t), hostile_text.map(lambda t: "a/" + t))
)
@example("fraud/detector@99999999999999999999.0.0")
@example("data:..@v1")
@example("run:" + "a" * 33)
def test_parse_ref_returns_a_round_tripping_ref_or_refuses(text: str) -> None:
    try:
        ref = parse_ref(text)
    except ValidationError as err:
        _check_refusal(err)
        return
    assert parse_ref(str(ref)) == ref
    if isinstance(ref, DataRef | ModelRef):
        names = [ref.name] if isinstance(ref, DataRef) else [ref.project, ref.model]
        for name in names:
            assert "/" not in name
            assert ".." not in name
            assert name.isascii()


@bounded(300)
@given(hostile_text | st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=200))
def test_an_accepted_name_is_never_path_like(text: str) -> None:
    try:
        name = validate_name(text)
    except ValidationError:
        return
    assert name == text
    assert 0 < len(name) <= MAX_NAME_LENGTH
    assert name.isascii()
    assert name.isprintable()
    assert "/" not in name
    assert "\\" not in name
    assert ".." not in name
    assert PurePosixPath(name).parts == (name,)


@bounded(300)
@given(st.tuples(*[st.integers(0, 2**70) | st.text("0123456789", min_size=1, max_size=25)] * 3))
def test_semver_parts_fit_in_64_bits_or_are_refused(parts: tuple[int | str, ...]) -> None:
    text = ".".join(str(p) for p in parts)
    try:
        parsed = parse_semver(text)
    except ValidationError:
        return
    assert all(0 <= p <= 2**63 - 1 for p in parsed)
    assert ".".join(map(str, parsed)) == text


# -- the filter language ----------------------------------------------------------------------------
_FILTER_WORDS = [
    "metrics.auc",
    "params.depth",
    "tags.team",
    "status",
    "name",
    "started",
    "attributes.user",
    "params.`a b`",
    "and",
    "or",
    "not",
    "in",
    "like",
    "(",
    ")",
    ",",
    "=",
    "!=",
    "<>",
    "<",
    ">=",
    "1",
    "-2.5e3",
    "'x'",
    "'it''s'",
    '"q"',
    "'2026-05-01'",
    "'%\\_'",
    "'",
    "`",
    ";",
    "$",
]
filter_soup = st.lists(st.sampled_from(_FILTER_WORDS) | hostile_text, max_size=30).map(" ".join)


@bounded(500)
@given(filter_soup | hostile_text)
@example("(" * 5000 + "status = 'x'" + ")" * 5000)
@example("not " * 5000 + "status = 'x'")
def test_any_filter_text_parses_or_is_refused(text: str) -> None:
    try:
        node = parse_filter(text)
    except ValidationError as err:
        _check_refusal(err)
        return
    # What parses compiles on both backends.
    for is_sqlite in (True, False):
        runs_query(deleted=False, project=None, where=node, sort=None, limit=None, sqlite=is_sqlite)


@bounded(100)
@given(
    st.tuples(
        st.sampled_from(["name", "params.depth", "tags.`t`", "status"]),
        st.sampled_from(["=", "<", "like", "in"]),
        hostile_text,
    )
)
@example(("name", "=", "a\udcff"))
def test_any_filter_that_parses_runs_on_sqlite(vault: Vault, parts: tuple[str, str, str]) -> None:
    field, op, value = parts
    quoted = "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    text = f"{field} {op} ({quoted})" if op == "in" else f"{field} {op} {quoted}"
    try:
        vault.runs.list(filter=text)
    except ValidationError as err:
        _check_refusal(err)


@bounded(200)
@given(filter_soup | hostile_text)
def test_any_sort_text_parses_or_is_refused(text: str) -> None:
    with contextlib.suppress(ValidationError):
        parse_sort(text)


# Text a database can hold: no NUL, no lone surrogates (the filter refuses both, at their column).
_storable = st.characters(codec="utf-8", exclude_characters="\x00")


def _comparison() -> st.SearchStrategy[str]:
    values = st.floats(allow_nan=False, allow_infinity=False).map(repr) | st.text(_storable, max_size=10).map(
        lambda t: "'" + t.replace("\\", "\\\\").replace("'", "''") + "'"
    )
    number = st.integers(-(10**6), 10**6).map(str)
    return st.one_of(
        st.tuples(st.sampled_from(["metrics.auc", "metrics.`val loss`"]), st.sampled_from(["=", "<", ">="]), number),
        st.tuples(st.sampled_from(["params.depth", "tags.team"]), st.sampled_from(["=", "!=", "<="]), values),
        st.tuples(
            st.sampled_from(["name", "status"]),
            st.just("in"),
            st.lists(values.filter(lambda v: v[0] == "'"), min_size=1, max_size=4).map(
                lambda vs: "(" + ", ".join(vs) + ")"
            ),
        ),
    ).map(" ".join)


valid_filters = st.recursive(
    _comparison(),
    lambda inner: st.one_of(
        inner.map(lambda f: f"not {f}"),
        inner.map(lambda f: f"({f})"),
        st.tuples(inner, st.sampled_from(["and", "or", "AND", "Or"]), inner).map(" ".join),
    ),
    max_leaves=12,
)


@bounded(300)
@given(valid_filters)
def test_well_formed_filters_parse_and_compile(text: str) -> None:
    node = parse_filter(text)
    sql, params = runs_query(deleted=False, project=None, where=node, sort=None, limit=None, sqlite=True)
    assert sql.count("?") == len(params)


@bounded(100)
@given(st.integers(0, 3 * MAX_DEPTH), st.lists(st.sampled_from(["not ", "("]), min_size=1))
def test_nesting_parses_up_to_the_bound_and_no_further(depth: int, kinds: list[str]) -> None:
    opening = [kinds[i % len(kinds)] for i in range(depth)]
    text = "".join(opening) + "name = 'a'" + ")" * opening.count("(")
    if depth <= MAX_DEPTH:
        parse_filter(text)
    else:
        with pytest.raises(ValidationError, match="nested more than"):
            parse_filter(text)


# -- tree objects -----------------------------------------------------------------------------------
_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
_hex = st.text("0123456789abcdef", min_size=64, max_size=64)


def _entry() -> st.SearchStrategy[dict[str, Any]]:
    good = st.fixed_dictionaries(
        {
            "name": st.text(min_size=1, max_size=12).filter(lambda n: "/" not in n and n not in (".", "..")),
            "type": st.sampled_from(["file", "dir"]),
            "sha256": _hex,
            "size": st.integers(0, 2**40),
        }
    )
    # Then any key may be dropped, or replaced by any JSON value.
    return st.tuples(
        good,
        st.dictionaries(
            st.sampled_from(["name", "type", "sha256", "size", "target"]), json_values | st.just(None), max_size=2
        ),
    ).map(lambda t: {**t[0], **t[1]})


def _tree_doc() -> st.SearchStrategy[bytes]:
    doc = st.fixed_dictionaries(
        {"format": st.just(TREE_FORMAT) | json_values, "entries": st.lists(_entry(), max_size=4) | json_values}
    )
    return doc.map(lambda d: json.dumps(d).encode())


@bounded(500)
@given(st.binary(max_size=200) | _tree_doc())
@example(b"")
@example(b"\xff\xfe")
@example(json.dumps({"format": TREE_FORMAT, "entries": [{"name": "a", "type": "link", "target": None}]}).encode())
def test_decode_tree_refuses_only_with_labvault_errors(data: bytes) -> None:
    with contextlib.suppress(LabvaultError):
        decode_tree(data)


@bounded(50)
@given(
    st.sampled_from(
        [
            b"[" * 100_000,
            b'{"format":"'
            + TREE_FORMAT.encode()
            + b'","entries":[{"name":"a","type":"file","sha256":"'
            + b"0" * 64
            + b'","size":Infinity}]}',
        ]
    )
)
def test_decode_tree_survives_deep_nesting_and_infinite_sizes(data: bytes) -> None:
    with contextlib.suppress(LabvaultError):
        decode_tree(data)


_CRAFTED_NAMES = ["..", ".", "", "a/b", "../escape", "a/../../escape", "/etc/passwd", "a\x00b", "sub/.."]


@bounded(30)
@given(st.sampled_from(_CRAFTED_NAMES), st.sampled_from(["file", "dir"]))
def test_decode_tree_refuses_crafted_entry_names(name: str, kind: str) -> None:
    entry = {"name": name, "type": kind, "sha256": "0" * 64, "size": 1}
    data = json.dumps({"entries": [entry], "format": TREE_FORMAT}, separators=(",", ":")).encode()
    with pytest.raises(IntegrityError):
        decode_tree(data)


# -- labvault.lock ----------------------------------------------------------------------------------
def _lock_doc() -> st.SearchStrategy[bytes]:
    entry = st.fixed_dictionaries(
        {
            "content_hash": _hex.map(lambda h: "sha256:" + h) | json_values,
            "kind": st.sampled_from(["file", "dir"]) | json_values,
            "ref": st.sampled_from(["data:raw@v1", "data:raw", "data:..@v1", "run:abcdef"]) | json_values,
        }
    )
    keys = st.sampled_from(["data/raw", "../up", "/abs", "a/../../b", "./x", "."]) | hostile_text
    doc = st.fixed_dictionaries(
        {
            "format": st.just("labvault.lock/1") | json_values,
            "datasets": st.dictionaries(keys, entry, max_size=4) | json_values,
        }
    )
    return doc.map(lambda d: json.dumps(d).encode())


@bounded(400)
@given(st.binary(max_size=200) | _lock_doc())
@example(b"[" * 100_000)
@example(b'{"format": "labvault.lock/1", "datasets": []}')
def test_read_lock_refuses_only_with_validation_errors(tmp_path: Path, data: bytes) -> None:
    (tmp_path / LOCK_NAME).write_bytes(data)
    try:
        entries = read_lock(tmp_path)
    except ValidationError as err:
        _check_refusal(err)
        return
    for key, entry in entries.items():
        assert not key.startswith("/")
        assert ".." not in PurePosixPath(key).parts
        assert entry.ref.version is not None
