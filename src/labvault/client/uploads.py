"""A large file to a server: one upload session, its pieces written at their offsets, resumable.

The client opens a session for the file's digest and size (``POST /objects/{digest}/uploads``),
sends the file in pieces (``PUT /objects/uploads/{id}?offset=N``) in order, then commits it; the
server verifies the whole against the digest before it becomes visible. The session's id is kept
under the user's cache folder until the commit: an upload cut short (by the network, or a killed
process) resumes by asking the server what it holds (``GET /objects/uploads/{id}``) and sending the
rest only.

A server whose store takes no sessions (the team vault's object storage) answers ``upload: null``,
and an older server has no such route: to either the file goes up as chunks, each an object of
its own that a resume skips when the server has it, then composed (``POST /objects/{digest}/compose``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from labvault.client import frames
from labvault.client.transport import Transport
from labvault.errors import CheckFailed, LabvaultError, NotFound, ValidationError
from labvault.refs import Digest, parse_digest
from labvault.storage.contained import Dest

__all__ = ["PIECE", "upload_file"]

#: The most one piece of a session carries: the bytes a cut can cost, and one request's worth.
PIECE = 64 << 20


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
    size = os.stat(path).st_size
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
            _put_composed(transport, digest, path, chunk_size, sent)
            return
        state.save(str(session["upload"]))
    upload_id = str(session["upload"])
    with open(path, "rb", buffering=0) as f:
        for offset, n in _pieces(_gaps(session.get("received"), size), piece_size):
            f.seek(offset)
            data = f.read(n)
            if len(data) != n:
                raise _changed(path)
            sent()
            transport.request(
                "PUT",
                f"/objects/uploads/{upload_id}",
                params={"offset": offset},
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
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


def _put_composed(transport: Transport, digest: Digest, path: Path, chunk_size: int, sent: Callable[[], None]) -> None:
    """Send a large file as chunks (each an object), skipping those the server has, then compose them."""
    chunks: list[str] = []
    whole = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            whole.update(block)
            chunks.append(hashlib.sha256(block).hexdigest())
    if whole.hexdigest() != digest.hex:
        raise _changed(path)
    answer = transport.request("POST", "/objects/missing", json={"digests": [f"sha256:{c}" for c in chunks]})
    missing = answer.get("missing") if isinstance(answer, dict) else None
    if not isinstance(missing, list):
        raise ValidationError("the server's answer has no 'missing' list", hint="is LABVAULT_URI a labvault server?")
    lacking = {parse_digest(str(m), allow_prefix=False).prefix for m in missing}
    with open(path, "rb") as f:
        for i, chunk in enumerate(chunks):
            if chunk not in lacking:
                continue
            f.seek(i * chunk_size)
            block = f.read(chunk_size)
            if hashlib.sha256(block).hexdigest() != chunk:
                raise _changed(path)
            sent()
            transport.request(
                "PUT", f"/objects/{chunk}", content=block, headers={"Content-Type": "application/octet-stream"}
            )
            lacking.discard(chunk)
    transport.request("POST", f"/objects/{digest.hex}/compose", json={"chunks": [f"sha256:{c}" for c in chunks]})


def _changed(path: Path) -> ValidationError:
    return ValidationError(f"{path} changed while it was being uploaded", hint="run the command again")
