"""Tabular files: exact record counts and schemas (CSV/TSV, JSON Lines, Parquet), and row readers.

Profiles stream: memory is bounded by the number of columns (a CSV row at a time; a Parquet file
is read from its footer only). A file that cannot be parsed is snapshotted as a plain file with a
note saying why its tabular stats were skipped; it never fails a snapshot.

Column types: ``int``, ``float``, ``bool``, ``string`` (CSV/TSV: the narrowest of int (an optional
sign and digits), float (decimal or exponent notation, inf, nan) and string that fits every
non-empty value; an all-empty column is ``string``); JSON Lines add
``object``, ``array`` and ``mixed``; Parquet columns carry their Arrow type names.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import re
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["Profile", "is_tabular_name", "iter_rows", "profile_stream", "schema_hash"]

#: {"record_count": int, "schema": [[name, type], ...]} or {"note": "..."}; stored in tree entries.
Profile = dict[str, Any]

_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_JSONL = (".jsonl", ".ndjson")
_PARQUET = (".parquet", ".pq")
_TYPES = ("int", "float", "string")
_BATCH = 4096
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


_TABULAR_SUFFIXES = (*_DELIMITERS, *_JSONL, *_PARQUET)


def is_tabular_name(name: str) -> bool:
    return name.lower().endswith(_TABULAR_SUFFIXES)


def schema_hash(schemas: list[list[list[str]]]) -> str:
    """sha256 hex of the sorted distinct schemas (what ``schema_hash`` in a manifest covers)."""
    import hashlib

    distinct = sorted({json.dumps(s, separators=(",", ":")) for s in schemas})
    return hashlib.sha256(("\n".join(distinct)).encode()).hexdigest()


def profile_stream(name: str, raw: IO[bytes]) -> Profile | None:
    """The profile of a tabular file read from ``raw`` (seekable for Parquet); None if not tabular."""
    s = _suffix(name)
    try:
        if s in _DELIMITERS:
            return _profile_delimited(raw, _DELIMITERS[s])
        if s in _JSONL:
            return _profile_jsonl(raw)
        if s in _PARQUET:
            return _profile_parquet(raw)
    except _Malformed as exc:
        return {"note": f"tabular stats skipped: {exc}"}
    return None


class _Malformed(Exception):
    pass


def _text(raw: IO[bytes]) -> io.TextIOWrapper:
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def _csv_reader(text: IO[str], delimiter: str) -> Iterator[list[str]]:
    return csv.reader(text, delimiter=delimiter, strict=True)


def _profile_delimited(raw: IO[bytes], delimiter: str) -> Profile:
    text = _text(raw)
    try:
        reader = _csv_reader(text, delimiter)
        header = next(reader, None)
        if header is None:
            raise _Malformed("the file is empty (no header row)")
        if len(set(header)) != len(header):
            raise _Malformed("the header row repeats a column name")
        width = len(header)
        levels = [0] * width  # index into _TYPES
        seen = [False] * width
        count = 0
        while True:
            # Column-wise over a batch of rows: the type checks run as C loops (regex over a column).
            batch = [row for row in itertools.islice(reader, _BATCH) if row]
            if not batch:
                break
            widths = set(map(len, batch))
            if widths != {width}:
                bad = next(i for i, row in enumerate(batch) if len(row) != width)
                raise _Malformed(f"record {count + bad + 1} has {len(batch[bad])} fields, the header has {width}")
            count += len(batch)
            for i, column in enumerate(zip(*batch, strict=True)):
                if levels[i] == 2:
                    continue
                values = [v for v in column if v != ""]
                if not values:
                    continue
                seen[i] = True
                if levels[i] == 0 and not all(map(_INT.fullmatch, values)):
                    levels[i] = 1
                if levels[i] == 1 and not all(map(_FLOAT.fullmatch, values)):
                    levels[i] = 2
    except csv.Error as exc:
        raise _Malformed(f"CSV parse error: {exc}") from None
    except UnicodeDecodeError:
        raise _Malformed("not UTF-8 text") from None
    finally:
        text.detach()
    schema = [[h, _TYPES[lv] if seen[i] else "string"] for i, (h, lv) in enumerate(zip(header, levels, strict=True))]
    return {"record_count": count, "schema": schema}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _merge(a: str | None, b: str) -> str:
    if a is None or a == "null" or a == b:
        return b
    if b == "null":
        return a
    if {a, b} == {"int", "float"}:
        return "float"
    return "mixed"


def _profile_jsonl(raw: IO[bytes]) -> Profile:
    types: dict[str, str | None] = {}
    count = 0
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for lineno, line in enumerate(raw, 1):
            text = decoder.decode(line)
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _Malformed(f"line {lineno} is not JSON ({exc.msg})") from None
            except RecursionError:  # the user's data, profiled line by line: not a file safeload reads
                raise _Malformed(f"line {lineno} is nested too deep") from None
            if not isinstance(rec, dict):
                raise _Malformed(f"line {lineno} is not a JSON object")
            count += 1
            for k, v in rec.items():
                types[k] = _merge(types.get(k), _json_type(v))
    except UnicodeDecodeError:
        raise _Malformed("not UTF-8 text") from None
    if count == 0:
        raise _Malformed("no records")
    return {"record_count": count, "schema": [[k, t or "null"] for k, t in types.items()]}


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise _Malformed("pyarrow is not installed (pip install 'labvault[parquet]')") from None
    return pq


def _profile_parquet(raw: IO[bytes]) -> Profile:
    pq = _pyarrow_parquet()
    try:
        pf = pq.ParquetFile(raw)
        schema = [[f.name, str(f.type)] for f in pf.schema_arrow]
        return {"record_count": int(pf.metadata.num_rows), "schema": schema}
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise _Malformed(f"not a readable Parquet file ({type(exc).__name__})") from None


def iter_rows(name: str, raw: IO[bytes], columns: list[str]) -> Iterator[list[Any]]:
    """Rows of the given columns (None for missing or empty values), streamed."""
    s = _suffix(name)
    if s in _DELIMITERS:
        text = _text(raw)
        reader = _csv_reader(text, _DELIMITERS[s])
        header = next(reader, [])
        idx = [header.index(c) if c in header else -1 for c in columns]
        for row in reader:
            if row:
                yield [(row[i] if row[i] != "" else None) if 0 <= i < len(row) else None for i in idx]
    elif s in _JSONL:
        for line in raw:
            if line.strip():
                rec = json.loads(line)
                yield [rec.get(c) for c in columns]
    elif s in _PARQUET:
        pf = _pyarrow_parquet().ParquetFile(raw)
        present = [c for c in columns if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=65536, columns=present):
            cols = {c: batch.column(c).to_pylist() for c in present}
            for i in range(batch.num_rows):
                yield [cols[c][i] if c in cols else None for c in columns]
