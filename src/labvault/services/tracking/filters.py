"""The run filter language: a hand-written tokenizer and recursive-descent parser.

::

    filter     := or
    or         := and ("or" and)*
    and        := unary ("and" unary)*
    unary      := "not" unary | "(" filter ")" | comparison
    comparison := field op value
                | field ["not"] "in" "(" value ("," value)* ")"
                | field ["not"] "like" string
    field      := metrics.KEY | params.KEY | tags.KEY | status | name | project | user | id | started | ended
    op         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    value      := number | 'string' | "string"

Keys are letters, digits and ``_ - . /``; any other key is written in backquotes
(``metrics.`val loss```). Keywords are case-insensitive. Errors name the 1-based column.

Bounds, so that no filter can exhaust the stack or the database's expression limits: at most
:data:`MAX_LENGTH` characters, :data:`MAX_DEPTH` levels of ``not`` and parentheses, and
:data:`MAX_TERMS` compared values (each value of an ``in`` list counts).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from labvault.errors import ValidationError
from labvault.storage.meta.run_filter import (
    ATTRIBUTES,
    And,
    Compare,
    Field,
    Node,
    Not,
    Op,
    Or,
    Scope,
    SortKey,
    Value,
)

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "MAX_TERMS", "FilterSyntaxError", "parse_filter", "parse_sort"]

MAX_LENGTH = 10_000
MAX_DEPTH = 100
# SQLite refuses expressions deeper than 1000 (an OR of n terms is n deep): stay well below.
MAX_TERMS = 500

_SCOPES = ("metrics", "params", "tags")
_KEYWORDS = {"and", "or", "not", "in", "like"}
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_]))
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
  | (?P<op><=|>=|==|!=|<>|=|<|>)
  | (?P<punct>[(),])
  | (?P<ident>(?:[A-Za-z_][A-Za-z0-9_\-/]*|`[^`]+`)(?:\.(?:[A-Za-z0-9_\-/]+|`[^`]+`))*)
    """,
    re.VERBOSE,
)


class FilterSyntaxError(ValidationError):
    """A malformed filter; the hint shows the filter with a caret under the failing column."""

    def __init__(self, text: str, column: int, reason: str) -> None:
        # The CLI prints "hint: " before the hint: the caret line is indented to match it.
        pointer = " " * (len("hint: ") + column - 1) + "^"
        super().__init__(
            f"invalid filter at column {column}: {reason}",
            hint=f"{text}\n{pointer}\nsee docs/tracking.md for the filter language",
        )
        self.column = column
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # number, string, op, punct, ident, kw, end
    text: str
    pos: int  # 0-based


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            bad = text[pos]
            reason = "unterminated string" if bad in "'\"" else f"unexpected character {bad!r}"
            raise FilterSyntaxError(text, pos + 1, reason)
        kind = cast(str, m.lastgroup)
        if kind != "ws":
            word = m.group()
            if kind == "ident" and word.lower() in _KEYWORDS:
                out.append(_Tok("kw", word.lower(), pos))
            else:
                out.append(_Tok(kind, word, pos))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


def _unquote(tok: _Tok) -> str:
    body, quote = tok.text[1:-1], tok.text[0]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            # Keep backslashes before LIKE wildcards: they escape them in the pattern.
            out.append(ch + nxt if nxt in "%_\\" else nxt)
            i += 2
        elif ch == quote and i + 1 < len(body) and body[i + 1] == quote:
            out.append(quote)
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _split_ident(text: str) -> list[str]:
    return [p[1:-1] if p.startswith("`") else p for p in re.findall(r"`[^`]+`|[^.`]+", text)]


def _field(text: str, tok: _Tok) -> Field:
    parts = _split_ident(tok.text)
    head = parts[0].lower()
    if head == "attributes" and len(parts) == 2:
        head, parts = parts[1].lower(), parts[1:]
    if head in _SCOPES:
        if len(parts) < 2:
            raise FilterSyntaxError(text, tok.pos + 1, f"{head} needs a key, e.g. {head}.auc")
        return Field(cast(Scope, head), ".".join(parts[1:]))
    if len(parts) == 1 and head in ATTRIBUTES:
        return Field("attribute", head)
    raise FilterSyntaxError(
        text,
        tok.pos + 1,
        f"unknown field {tok.text!r}: use metrics.KEY, params.KEY, tags.KEY or one of " + ", ".join(sorted(ATTRIBUTES)),
    )


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.terms = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def fail(self, reason: str, tok: _Tok | None = None) -> FilterSyntaxError:
        tok = tok or self.tok
        found = "the end of the filter" if tok.kind == "end" else repr(tok.text)
        return FilterSyntaxError(self.text, tok.pos + 1, f"{reason}, found {found}")

    def take(self, kind: str, text: str | None = None) -> _Tok | None:
        tok = self.tok
        if tok.kind == kind and (text is None or tok.text == text):
            self.i += 1
            return tok
        return None

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise self.fail("empty filter: expected a comparison such as metrics.auc > 0.9")
        node = self.or_()
        if self.tok.kind != "end":
            raise self.fail("expected 'and', 'or' or the end")
        return node

    def or_(self) -> Node:
        nodes = [self.and_()]
        while self.take("kw", "or"):
            nodes.append(self.and_())
        return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))

    def and_(self) -> Node:
        nodes = [self.unary()]
        while self.take("kw", "and"):
            nodes.append(self.unary())
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def unary(self) -> Node:
        tok = self.tok
        if (tok.kind, tok.text) in (("kw", "not"), ("punct", "(")):
            if self.depth == MAX_DEPTH:
                raise FilterSyntaxError(self.text, tok.pos + 1, f"nested more than {MAX_DEPTH} deep")
            self.depth += 1
            self.i += 1
            if tok.text == "not":
                node: Node = Not(self.unary())
            else:
                node = self.or_()
                if not self.take("punct", ")"):
                    raise self.fail("expected ')'")
            self.depth -= 1
            return node
        return self.comparison()

    def count_term(self, tok: _Tok) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise FilterSyntaxError(self.text, tok.pos + 1, f"more than {MAX_TERMS} values to compare")

    def comparison(self) -> Node:
        tok = self.tok
        if tok.kind != "ident":
            raise self.fail("expected a field such as metrics.auc, params.depth or status")
        self.i += 1
        field = _field(self.text, tok)
        negate = bool(self.take("kw", "not"))
        if self.take("kw", "in"):
            node: Node = self.in_list(field)
        elif self.tok.kind == "kw" and self.tok.text == "like":
            like = self.tok
            self.i += 1
            node = self.like(field, like)
        elif negate:
            raise self.fail("expected 'in' or 'like' after 'not'")
        else:
            op_tok = self.take("op")
            if op_tok is None:
                raise self.fail("expected a comparison operator (=, !=, <, <=, >, >=, in, like)")
            op = {"==": "=", "<>": "!="}.get(op_tok.text, op_tok.text)
            node = Compare(field, cast(Op, op), (self.value(field),))
        return Not(node) if negate else node

    def in_list(self, field: Field) -> Node:
        if not self.take("punct", "("):
            raise self.fail("expected '(' after 'in'")
        values = [self.value(field)]
        while self.take("punct", ","):
            values.append(self.value(field))
        if not self.take("punct", ")"):
            raise self.fail("expected ',' or ')'")
        return Compare(field, "in", tuple(values))

    def like(self, field: Field, like: _Tok) -> Node:
        if field.scope == "metrics" or field.key in ("started", "ended"):
            raise self.fail("'like' compares text; metrics and times are not text", like)
        tok = self.take("string")
        if tok is None:
            raise self.fail("expected a quoted pattern after 'like'")
        self.count_term(tok)
        return Compare(field, "like", (_unquote(tok),))

    def value(self, field: Field) -> Value:
        tok = self.tok
        if tok.kind in ("number", "string"):
            self.count_term(tok)
        if tok.kind == "number":
            self.i += 1
            if field.scope == "attribute":
                raise self.fail(f"{field.key} compares with a quoted string", tok)
            return float(tok.text)
        if tok.kind == "string":
            self.i += 1
            text = _unquote(tok)
            if field.scope == "metrics":
                raise self.fail("metrics compare with numbers", tok)
            if field.key in ("started", "ended") and field.scope == "attribute":
                return _parse_time(self.text, tok, text)
            return text
        raise self.fail("expected a number or a quoted string")


def _parse_time(text: str, tok: _Tok, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FilterSyntaxError(
            text, tok.pos + 1, f"{value!r} is not a date or time (write '2026-05-01' or '2026-05-01T12:00:00Z')"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_filter(text: str) -> Node:
    """Parse a filter; raises :class:`FilterSyntaxError` (exit 2) with the failing column.

    The trees of the last 256 texts are kept: a tree is immutable, and a filter holds no relative
    time, so the same text always means the same tree."""
    return _parse_filter(text)


@functools.lru_cache(maxsize=256)
def _parse_filter(text: str) -> Node:
    if len(text) > MAX_LENGTH:
        raise ValidationError(
            f"the filter is {len(text)} characters long; the limit is {MAX_LENGTH}",
            hint="split the query, or select by project, tag or status first",
        )
    _check_storable(text)
    return _Parser(text).parse()


# NUL (PostgreSQL text cannot hold it) and lone surrogates (a command line's undecodable bytes).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _check_storable(text: str) -> None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return
    ch = found.group()
    if ch == "\x00":
        reason = "a NUL character (\\x00) cannot be compared"
    elif 0xDC80 <= ord(ch) <= 0xDCFF:
        reason = f"byte \\x{ord(ch) - 0xDC00:02x} is not valid UTF-8"
    else:
        reason = f"\\u{ord(ch):04x} is not valid text"
    # The hint echoes the filter: show '?' in place of what a terminal cannot print.
    raise FilterSyntaxError(_UNSTORABLE.sub("?", text), found.start() + 1, reason)


def parse_sort(text: str) -> SortKey:
    """``metrics.auc``, ``-started`` (descending), ``params.depth``, ``name``..."""
    raw = text.strip()
    _check_storable(raw)
    descending = raw.startswith("-")
    body = raw[1:] if descending or raw.startswith("+") else raw
    toks = _tokenize(body)
    if len(toks) != 2 or toks[0].kind != "ident":
        raise ValidationError(
            f"invalid sort key {text!r}", hint="write e.g. metrics.auc, -metrics.loss, params.depth or -started"
        )
    return SortKey(_field(body, toks[0]), descending)
