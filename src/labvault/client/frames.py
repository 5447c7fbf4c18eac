"""The framing of many small objects in one body (``POST /api/v1/objects/batch`` and its answer to
``POST /api/v1/objects/batch/get``), shared by the server and its clients.

A body is the magic line ``LVOBJ1\\n``, then per object a 72-byte header (the 64 lowercase hex digits
of its sha256, then its length as 8 bytes big-endian) and its bytes. In an answer, the length
:data:`SKIPPED` (and no bytes) says "not in this batch: fetch it alone" (too big for a batch, or
unreadable on the server, where a single ``GET`` reports why). Every object is hashed as it is
parsed and refused unless its bytes hash to its header's digest: nothing unverified is handed on.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterable, Sequence

from labvault.client.transport import Transport
from labvault.errors import IntegrityError, LabvaultError, NotFound, ValidationError
from labvault.refs import Digest

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_BODY",
    "MAX_COUNT",
    "MAX_OBJECT",
    "SKIPPED",
    "FrameParser",
    "batches",
    "fetch_batch",
    "frame",
    "no_batch_route",
]

MAGIC = b"LVOBJ1\n"
HEADER = 72
#: The length that marks an object left out of a batch answer.
SKIPPED = (1 << 64) - 1
#: The largest object a batch carries; bigger ones go one by one (and in chunks).
MAX_OBJECT = 1 << 20
#: The most objects in one batch request (up or down).
MAX_COUNT = 1000
#: The most bytes of one batch body (the server's limit of a request body) and of one answer's objects.
MAX_BODY = 16 << 20
_HEX = re.compile(rb"[0-9a-f]{64}")
#: The hint of a server's "no such route" answers (404, 405).
_NO_ROUTE_HINT = "see the endpoints at /api/docs"

Frame = tuple[str, bytes | None]  # (hex digest, bytes, or None when skipped)


def frame(hexd: str, data: bytes | None) -> bytes:
    """One object's header and bytes (``None``: the skipped marker)."""
    size = SKIPPED if data is None else len(data)
    return hexd.encode("ascii") + size.to_bytes(8, "big") + (data or b"")


class FrameParser:
    """Parses a framed body block by block; ``bad(message)`` and ``mismatch(hex, got)`` make the errors
    raised for a malformed body and for an object whose bytes are not its name."""

    def __init__(
        self,
        *,
        bad: Callable[[str], LabvaultError],
        mismatch: Callable[[str, str], LabvaultError],
        allow_skipped: bool = False,
    ) -> None:
        self._buf = bytearray()
        self._magic = False
        self._bad, self._mismatch = bad, mismatch
        self._allow_skipped = allow_skipped
        self.count = 0

    def feed(self, block: bytes) -> list[Frame]:
        """The objects completed by ``block``, verified."""
        self._buf += block
        out: list[Frame] = []
        if not self._magic:
            if len(self._buf) < len(MAGIC):
                if not MAGIC.startswith(bytes(self._buf)):
                    raise self._bad("the body does not start with the batch magic LVOBJ1")
                return out
            if not self._buf.startswith(MAGIC):
                raise self._bad("the body does not start with the batch magic LVOBJ1")
            del self._buf[: len(MAGIC)]
            self._magic = True
        start = 0
        buf = self._buf
        while len(buf) - start >= HEADER:
            hexd = bytes(buf[start : start + 64])
            if _HEX.fullmatch(hexd) is None:
                raise self._bad(f"frame {self.count + 1} does not start with a 64-hex sha256")
            size = int.from_bytes(buf[start + 64 : start + HEADER], "big")
            name = hexd.decode("ascii")
            if size == SKIPPED and self._allow_skipped:
                out.append((name, None))
                start += HEADER
                self.count += 1
                continue
            if size > MAX_OBJECT:
                raise self._bad(f"object sha256:{name} is {size} bytes; a batch carries objects up to {MAX_OBJECT}")
            if len(buf) - start - HEADER < size:
                break
            data = bytes(buf[start + HEADER : start + HEADER + size])
            got = hashlib.sha256(data).hexdigest()
            if got != name:
                raise self._mismatch(name, got)
            out.append((name, data))
            start += HEADER + size
            self.count += 1
        del buf[:start]
        return out

    def close(self) -> None:
        """Refuses a body that ended inside a frame (or before its magic)."""
        if not self._magic or self._buf:
            raise self._bad("the body ends inside a frame (it was cut short)")


def no_batch_route(err: LabvaultError) -> bool:
    """Whether ``err`` is a server older than the batch routes saying it has none (then objects go one
    by one, as they did)."""
    return isinstance(err, ValidationError | NotFound) and err.hint == _NO_ROUTE_HINT


def _answer_error(where: str) -> Callable[[str], LabvaultError]:
    def bad(message: str) -> LabvaultError:
        return IntegrityError(f"{where} sent a malformed batch of objects: {message}", hint="check the server's log")

    return bad


def _answer_mismatch(where: str) -> Callable[[str, str], LabvaultError]:
    def mismatch(hexd: str, got: str) -> LabvaultError:
        return IntegrityError(
            f"{where} sent bytes for sha256:{hexd} that hash to sha256:{got}",
            hint="the object is corrupt on the server or in transit; run `labvault fsck` on the server",
        )

    return mismatch


def fetch_batch(transport: Transport, digests: Sequence[Digest], *, where: str) -> tuple[dict[str, bytes], list[str]]:
    """The verified bytes of ``digests`` (up to :data:`MAX_COUNT`) in as few requests as the server's
    answer size allows; and the hex digests it left out (to fetch one by one)."""
    got: dict[str, bytes] = {}
    alone: list[str] = []
    pending = list(dict.fromkeys(d.hex for d in digests))
    while pending:
        # Safe to repeat (it reads only): the key lets the transport retry a lost answer.
        response = transport.request(
            "POST",
            "/objects/batch/get",
            json={"digests": pending},
            raw=True,
            idempotency_key=uuid.uuid4().hex,
        )
        parser = FrameParser(bad=_answer_error(where), mismatch=_answer_mismatch(where), allow_skipped=True)
        asked = set(pending)
        answered = parser.feed(response.content)
        parser.close()
        for hexd, data in answered:
            if hexd not in asked:
                raise _answer_error(where)(f"sha256:{hexd} was not asked for")
            if data is None:
                alone.append(hexd)
            else:
                got[hexd] = data
        if not answered:  # the server always answers at least the first: no progress is malformed
            raise _answer_error(where)("it holds no object")
        done = {h for h, _ in answered}
        pending = [h for h in pending if h not in done]
    return got, alone


def batches(sizes: Iterable[tuple[str, int]]) -> list[list[str]]:
    """Hex digests grouped so that each group fits one batch request (count and bytes)."""
    groups: list[list[str]] = []
    current: list[str] = []
    held = len(MAGIC)
    for hexd, size in sizes:
        if current and (len(current) >= MAX_COUNT or held + HEADER + size > MAX_BODY):
            groups.append(current)
            current, held = [], len(MAGIC)
        current.append(hexd)
        held += HEADER + size
    if current:
        groups.append(current)
    return groups
