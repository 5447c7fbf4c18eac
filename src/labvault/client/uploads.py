"""A large file or object to a server: one upload session, its pieces written at their offsets, resumable.

The client opens a session for the digest and size (``POST /objects/{digest}/uploads``), sends the
bytes in pieces (``PUT /objects/uploads/{id}?offset=N``) in order, then commits it; the server
verifies the whole against the digest before it becomes visible. The bytes are hashed here too, as
they are read, and a mismatch abandons the session before its commit. The session's id is kept
under the user's cache folder until the commit: an upload cut short (by the network, or a killed
process) resumes by asking the server what it holds (``GET /objects/uploads/{id}``) and sending the
rest only. ``data add`` through a server (``HttpObjectStore``) sends files this way, and a push to a
server remote its big objects (``remote_objects``).

A server whose store takes no sessions (the team vault's object storage) answers ``upload: null``,
and an older server has no such route: to either the file goes up as chunks, each an object of
its own that a resume skips when the server has it, then composed (``POST /objects/{digest}/compose``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import IO

from labvault.client import frames
from labvault.client.settings import spool_dir
from labvault.client.transport import Transport
from labvault.errors import CheckFailed, LabvaultError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.storage.contained import Dest

__all__ = ["PIECE", "changed_error", "upload_file", "upload_stream", "uploads_dir"]

#: The most one piece of a session carries: the bytes a cut can cost, and one request's worth.
PIECE = 64 << 20
_BLOCK = 1 << 20  # what is read at a time of the bytes the server already holds (hashed, not sent)

#: Opens the bytes to send, from their start, each time it is called.
Opener = Callable[[], AbstractContextManager[IO[bytes]]]


def uploads_dir() -> Path:
    """Where the ids of uploads in progress are kept: ``$XDG_CACHE_HOME/labvault/uploads`` (or under
    ``~/.cache``), beside the object cache, as ``HttpObjectStore`` keeps them by default."""
    return spool_dir().parent / "uploads"


def upload_file(
    transport: Transport,
    digest: Digest,
    path: Path,
    *,
    chunk_size: int,
    piece_size: int = PIECE,
    state_dir: Path,
    sent: Callable[[], None],
) -> None:
    """Send ``path`` (which hashes to ``digest``) in one session, or as chunks and a compose."""
    upload_stream(
        transport,
        digest,
        os.stat(path).st_size,
        lambda: open(path, "rb"),  # noqa: SIM115 - a context manager, opened by its caller
        chunk_size=chunk_size,
        piece_size=piece_size,
        state_dir=state_dir,
        sent=sent,
        mismatch=lambda: changed_error(path),
    )


def upload_stream(
    transport: Transport,
    digest: Digest,
    size: int,
    opener: Opener,
    *,
    chunk_size: int,
    piece_size: int = PIECE,
    state_dir: Path,
    sent: Callable[[], None],
    mismatch: Callable[[], LabvaultError],
) -> None:
    """Send the ``size`` bytes ``opener`` reads (which hash to ``digest``) in one session, or as
    chunks and a compose; ``sent()`` before each request that carries bytes. Bytes that do not hash
    to ``digest`` raise ``mismatch()`` and nothing is stored."""
    state = _State(state_dir, transport.target.url, digest)
    session = state.resume(transport, size)
    if session is None:
        try:
            session = transport.request("POST", f"/objects/{digest.hex}/uploads", json={"size": size})
        except LabvaultError as err:
            if not frames.no_batch_route(err):
                raise
            session = {"upload": None}  # an older server: no sessions
        if not isinstance(session, dict) or session.get("upload") is None:
            _put_composed(transport, digest, opener, chunk_size, sent, mismatch)
            return
        state.save(str(session["upload"]))
    upload_id = str(session["upload"])
    with opener() as stream:
        read = _send_pieces(transport, upload_id, stream, size, session.get("received"), piece_size, sent)
    if read != digest.hex:  # the server would refuse it at the commit; say why, and drop the session
        state.forget()
        with suppress(LabvaultError):  # else gc sweeps the abandoned session
            transport.request("DELETE", f"/objects/uploads/{upload_id}")
        raise mismatch()
    try:
        transport.request("POST", f"/objects/uploads/{upload_id}/commit")
    except CheckFailed:
        state.forget()  # the session is gone: the file changed, or bytes were corrupted on the way
        raise
    state.forget()


class _State:
    """The id of an upload in progress, kept until its commit so that another process resumes it."""

    def __init__(self, state_dir: Path, url: str, digest: Digest) -> None:
        self.dir = state_dir
        self.name = hashlib.sha256(f"{url}\n{digest.hex}".encode()).hexdigest()[:32]

    def resume(self, transport: Transport, size: int) -> dict[str, object] | None:
        """What the server holds of the session kept here, if it still has it."""
        try:
            upload_id = (self.dir / self.name).read_text().strip()
        except OSError:
            return None
        if len(upload_id) != 32 or upload_id.strip("0123456789abcdef"):
            self.forget()
            return None
        try:
            session = transport.request("GET", f"/objects/uploads/{upload_id}")
        except NotFound:  # committed, swept, or a server without sessions
            self.forget()
            return None
        if not isinstance(session, dict) or session.get("size") != size:
            return None
        return session

    def save(self, upload_id: str) -> None:
        with Dest.open(self.dir) as into:
            into.write_file(self.name, upload_id.encode())

    def forget(self) -> None:
        if self.dir.is_dir():
            with Dest.open(self.dir, create=False) as into:
                into.remove(self.name)


def _gaps(received: object, size: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` spans of ``[0, size)`` not in ``received`` (the server's answer, checked)."""
    spans: list[tuple[int, int]] = []
    for item in received if isinstance(received, list) else []:
        if isinstance(item, list) and len(item) == 2 and all(isinstance(x, int) for x in item):
            spans.append((max(0, item[0]), min(size, item[1])))
    gaps: list[tuple[int, int]] = []
    at = 0
    for start, end in sorted(spans):
        if start > at:
            gaps.append((at, start))
        at = max(at, end)
    if at < size:
        gaps.append((at, size))
    return gaps


def _pieces(gaps: list[tuple[int, int]], piece: int) -> Iterator[tuple[int, int]]:
    for start, end in gaps:
        for offset in range(start, end, piece):
            yield offset, min(piece, end - offset)


def _send_pieces(
    transport: Transport,
    upload_id: str,
    stream: IO[bytes],
    size: int,
    received: object,
    piece_size: int,
    sent: Callable[[], None],
) -> str:
    """Read ``stream`` through, hashing it, and send the pieces the server lacks; the hex digest of
    what was read ("" when it was not ``size`` bytes). Reading forward only, the bytes the server
    holds are hashed too, and the stream need not seek. The next piece is read and hashed in a thread
    while this one is sent, so that the disk, the hashing and the network take no turns."""
    whole = hashlib.sha256()
    pieces = _read_pieces(stream, _pieces(_gaps(received, size), piece_size), size, whole)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="labvault-upload-read") as ahead:
            coming = ahead.submit(next, pieces, None)
            while (piece := coming.result()) is not None:
                coming = ahead.submit(next, pieces, None)
                offset, data = piece
                sent()
                transport.request(
                    "PUT",
                    f"/objects/uploads/{upload_id}",
                    params={"offset": offset},
                    content=data,
                    headers={"Content-Type": "application/octet-stream"},
                )
    except _ShortStream:
        return ""
    return whole.hexdigest()


class _ShortStream(Exception):
    """The stream ended before ``size`` bytes, or went on after them."""


def _read_pieces(
    stream: IO[bytes], pieces: Iterator[tuple[int, int]], size: int, whole: hashlib._Hash
) -> Iterator[tuple[int, bytes]]:
    """Each piece's offset and bytes, in order, with every byte of the stream hashed into ``whole``;
    :class:`_ShortStream` when the stream is not ``size`` bytes."""
    at = 0
    for offset, n in pieces:
        if not _skim(stream, offset - at, whole):
            raise _ShortStream
        data = _read(stream, n)
        if len(data) != n:
            raise _ShortStream
        whole.update(data)
        yield offset, data
        at = offset + n
    if not _skim(stream, size - at, whole) or stream.read(1):
        raise _ShortStream


def _read(stream: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end (an unbuffered read may return less)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        block = stream.read(n - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _skim(stream: IO[bytes], n: int, whole: hashlib._Hash) -> bool:
    """Hash the next ``n`` bytes without sending them; False if the stream ends first."""
    while n > 0:
        block = stream.read(min(n, _BLOCK))
        if not block:
            return False
        whole.update(block)
        n -= len(block)
    return True


def _put_composed(
    transport: Transport,
    digest: Digest,
    opener: Opener,
    chunk_size: int,
    sent: Callable[[], None],
    mismatch: Callable[[], LabvaultError],
) -> None:
    """Send large bytes as chunks (each an object), skipping those the server has, then compose them.
    One pass: each chunk is hashed, asked for, and sent if the server lacks it; bytes that do not hash
    to ``digest`` are refused before the compose (the chunks sent are orphans that gc collects)."""
    chunks: list[str] = []
    whole = hashlib.sha256()
    with opener() as f:
        while block := _read(f, chunk_size):  # read forward: the stream need not seek
            whole.update(block)
            chunk = hashlib.sha256(block).hexdigest()
            chunks.append(f"sha256:{chunk}")
            answer = transport.request("POST", "/objects/missing", json={"digests": chunks[-1:]})
            missing = answer.get("missing") if isinstance(answer, dict) else None
            if not isinstance(missing, list):
                raise ValidationError(
                    "the server's answer has no 'missing' list", hint="is LABVAULT_URI a labvault server?"
                )
            if missing:  # a rerun skips the chunks already up
                sent()
                transport.request(
                    "PUT", f"/objects/{chunk}", content=block, headers={"Content-Type": "application/octet-stream"}
                )
    if whole.hexdigest() != digest.hex:
        raise mismatch()
    transport.request("POST", f"/objects/{digest.hex}/compose", json={"chunks": chunks})


def changed_error(path: Path) -> ValidationError:
    """A local file that no longer hashes to what it did when its upload began."""
    return ValidationError(f"{path} changed while it was being uploaded", hint="run the command again")
