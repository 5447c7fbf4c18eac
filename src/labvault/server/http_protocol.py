"""uvicorn's httptools protocol, handing a request body to the app as the socket gave it.

uvicorn appends each piece of a body to a ``bytearray`` and gives the app a ``bytes`` copy of it,
and it stops reading the socket whenever more than 64 KiB wait: every byte of an upload was copied
twice more on the event loop's thread, and reading paused and resumed four times per MiB. That
thread is what limits an upload (it also parses, and runs the app). Here the pieces wait in a queue,
each is handed over as it is (no copy, one per ``receive``), and reading pauses only when more than
:data:`HIGH_WATER` bytes wait.

Everything else is uvicorn's own. ``labvault server`` names :data:`Protocol`: this protocol where
:func:`usable` (a uvicorn release it was checked against), else uvicorn's own choice.
"""

from __future__ import annotations

import asyncio
import collections

import uvicorn
from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

__all__ = ["CHECKED", "HIGH_WATER", "PiecesProtocol", "Protocol", "usable"]

#: Body bytes received and not yet taken by the app, above which the socket is not read.
HIGH_WATER = 1 << 20
#: The uvicorn releases (prefixes) whose ``RequestResponseCycle.receive`` the one below mirrors.
CHECKED = ("0.54.",)


def usable() -> bool:
    return uvicorn.__version__.startswith(CHECKED)


class PiecesCycle(RequestResponseCycle):
    """A request whose body pieces wait in a queue, each handed over as it came."""

    pieces: collections.deque[bytes]
    held: int

    async def receive(self) -> ASGIReceiveEvent:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.pieces and not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body = b""
        if self.pieces:
            body = self.pieces.popleft()
            self.held -= len(body)
            if self.held <= HIGH_WATER:
                self.flow.resume_reading()
        return {"type": "http.request", "body": body, "more_body": bool(self.pieces) or self.more_body}


class PiecesProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each request's body handed over piece by piece."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before and type(cycle) is RequestResponseCycle:  # a new request, not an upgrade
            cycle.__class__ = PiecesCycle
            pieces: PiecesCycle = cycle  # type: ignore[assignment]
            pieces.pieces = collections.deque()
            pieces.held = 0

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle, PiecesCycle):
            super().on_body(body)
            return
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.pieces.append(body)
        cycle.held += len(body)
        if cycle.held > HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()


#: What ``labvault server`` gives ``uvicorn.run(http=...)`` (by name: the command line imports no server code).
Protocol: type[asyncio.Protocol] = PiecesProtocol if usable() else AutoHTTPProtocol
