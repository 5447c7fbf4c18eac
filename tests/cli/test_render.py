"""The plain table writer prints exactly what rich prints when output is piped, or leaves it to rich."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import redirect_stdout

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labvault.cli import render
from labvault.cli.render import OUTPUT

_PIECES = [*"ab Z09:-_.@/=,[]\\é\t\n\x1b", ":100:", ":smile:", "[bold]", "2026-11-30T00:00:17Z"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=6).map("".join)


def _printed(write: Callable[[], object]) -> tuple[object, str]:
    with redirect_stdout(io.StringIO()) as out:
        result = write()
    return result, out.getvalue()


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(1, 4),
    data=st.data(),
    title=st.none() | _TEXT,
)
def test_plain_tables_match_rich(width: int, data: st.DataObject, title: str | None) -> None:
    columns = data.draw(st.lists(_TEXT, min_size=width, max_size=width))
    rows = data.draw(st.lists(st.lists(_TEXT, min_size=width, max_size=width), max_size=4))
    written, plain = _printed(lambda: render._plain_table([columns, *rows], title))
    if written:
        assert plain == _printed(lambda: OUTPUT._rich_table(columns, rows, title=title))[1]
    else:
        assert plain == ""  # nothing written: rich prints this table


def test_plain_writer_prints_the_usual_tables(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [["3f9c2a1b7d4e", "fraud", "train", "finished", "11-29 23:31", "1.2s", "auc=0.91,loss=0.1"]]
    assert render._plain_table([["id", "project", "name", "status", "started", "duration", "metrics"], *rows], None)
    assert capsys.readouterr().out.splitlines()[1].startswith("3f9c2a1b7d4e  fraud    train  finished")
    assert render._plain_table([["", ""], ["run", "run:3f9c2a1b7d4e"]], "params")
    assert capsys.readouterr().out == "params\n" + " " * 21 + "\nrun  run:3f9c2a1b7d4e\n"


@pytest.mark.parametrize(
    ("env", "plain"), [({}, True), ({"FORCE_COLOR": "1"}, False), ({"TTY_COMPATIBLE": "1"}, False)]
)
def test_plain_only_when_rich_would_print_no_escape_codes(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], plain: bool
) -> None:
    for key in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    class Piped:
        def isatty(self) -> bool:
            return False

    assert render._writes_plain(Piped()) is plain


@pytest.mark.parametrize("through_rich", [False, True])
def test_cell_text_is_printed_as_it_is(monkeypatch: pytest.MonkeyPatch, through_rich: bool) -> None:
    # A run named "[bold]odd :100: name" printed as "odd 💯 name", and "a [/] b" was a traceback:
    # rich read cell text as markup and emoji codes.
    for key in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(key, raising=False)
    names = [
        "[bold]odd :100: name",
        "a [/] b",
        ":smile: [red]x[/red]",
        "caf\N{LATIN SMALL LETTER E WITH ACUTE} :1st_place_medal:",
    ]
    rows = [[n] for n in names]
    write = (
        (lambda: OUTPUT._rich_table(["name"], rows, title=None))
        if through_rich
        else lambda: OUTPUT.table(["name"], rows)
    )
    assert [line.rstrip() for line in _printed(write)[1].splitlines()] == ["name", *names]
