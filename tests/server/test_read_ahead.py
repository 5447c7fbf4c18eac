"""The read-ahead of downloads: blocks in order, errors where they happened, and an abandoned
download stops reading and closes its file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from labvault.errors import IntegrityError
from labvault.server import read_ahead as module
from labvault.server.read_ahead import read_ahead


def test_blocks_come_in_order_and_an_error_after_the_blocks_before_it() -> None:
    def blocks() -> Iterator[bytes]:
        for i in range(10):
            yield bytes([i]) * 1000
        raise IntegrityError("corrupt", hint="fsck")

    got: list[bytes] = []
    with pytest.raises(IntegrityError, match="corrupt"):
        got.extend(read_ahead(blocks()))
    assert got == [bytes([i]) * 1000 for i in range(10)]


def test_an_abandoned_download_stops_reading_and_closes_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_WAIT", 0.05)
    read, closed = [], threading.Event()

    def blocks() -> Iterator[bytes]:
        try:
            for i in range(1000):
                read.append(i)
                yield b"x"
        finally:
            closed.set()

    ahead = read_ahead(blocks())
    assert next(ahead) == b"x"
    ahead.close()  # the client went away: the response drops its body
    assert closed.wait(5)
    time.sleep(0.2)
    assert len(read) <= 2 + module.AHEAD + 1  # it stopped reading ahead, not at the end of the object


def test_a_body_never_taken_is_given_up_after_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_WAIT", 0.02)
    monkeypatch.setattr(module, "_ABANDONED", 0.1)
    closed = threading.Event()

    def blocks() -> Iterator[bytes]:
        try:
            while True:
                yield b"x"
        finally:
            closed.set()

    ahead = read_ahead(blocks())
    assert next(ahead) == b"x"  # then never asked again, and never closed
    assert closed.wait(5)
    del ahead
