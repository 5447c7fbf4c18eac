"""Objects between a vault and a labvault server, for push and pull through the API.

A push asks the server which objects it lacks (``POST /objects/missing``, in batches), then sends
only those, ``jobs`` requests at a time: objects up to 1 MiB framed together, up to 1,000 / 16 MiB
per ``POST /objects/batch`` (stored all or none), an object up to :data:`PIECES_OVER` bytes in one
``PUT``, a bigger one in pieces of :data:`PIECE` bytes into one upload session (``client/uploads.py``:
the server writes the bytes once, at their offsets, and verifies the whole at the commit; the
session's id is kept under the user's cache folder, so a rerun after an interruption sends only
what the server does not hold yet). A server whose store takes no sessions (the team vault's object
storage answers ``{"upload": null}``) gets chunks of :data:`CHUNK` bytes instead, each stored as its
own object (a rerun sends only the chunks still missing), composed there. The server hashes what
arrives and refuses bytes that do not match their name; the bytes read here are hashed too, so a
corrupt local object is refused (exit 5) before it is stored.

A pull reads through :class:`ServerSource`, which offers the two reads ``copy_objects`` and
``reachable`` use (``get_bytes`` and ``open``), and ``get_many`` (``POST /objects/batch/get``, up
to 1,000 small objects per request); what it downloads is hashed on arrival, and again by the
receiving store.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from labvault.client import frames
from labvault.client.transport import CLIENT_VERIFIES, Transport
from labvault.client.uploads import PIECE, upload_stream, uploads_dir
from labvault.errors import IntegrityError, LabvaultError, NotFound
from labvault.refs import Digest
from labvault.storage.objects.protocol import ObjectStore

__all__ = [
    "CHUNK",
    "PIECE",
    "PIECES_OVER",
    "DownloadStats",
    "ServerSource",
    "UploadStats",
    "download_objects",
    "missing_on_server",
    "upload_objects",
]

#: Objects above this size go up in pieces (of an upload session, else chunks), resumable; below it, in one PUT.
PIECES_OVER = 64 << 20
#: The size of one chunk of a big object, to a server that takes no upload session.
CHUNK = 32 << 20
_ASK = 10_000  # digests per /objects/missing request
_TREE_CACHE = 4 << 20  # small objects a pull reads twice (trees: walked, then copied) are kept
_PER_BATCH = frames.MAX_COUNT  # objects a pull's worker asks for, and stores, per batch


@dataclass(slots=True)
class UploadStats:
    objects: int = 0
    bytes: int = 0


def missing_on_server(transport: Transport, digests: Sequence[Digest]) -> list[Digest]:
    """The digests the server does not store, in the order given."""
    absent: set[str] = set()
    for start in range(0, len(digests), _ASK):
        batch = [str(d) for d in digests[start : start + _ASK]]
        answer = transport.request("POST", "/objects/missing", json={"digests": batch})
        listed = answer.get("missing") if isinstance(answer, dict) else None
        if not isinstance(listed, list):
            raise IntegrityError("the server's list of missing objects is malformed", hint="check the server's log")
        absent.update(str(x).removeprefix("sha256:") for x in listed)
    return [d for d in digests if d.hex in absent]


def _corrupt(digest: Digest, where: str) -> IntegrityError:
    return IntegrityError(
        f"object {digest} on {where} is corrupt (its bytes do not match its name)",
        hint=f"run `labvault fsck` on {where}; nothing was recorded on the server",
    )


def _put(transport: Transport, digest: Digest, data: bytes) -> None:
    transport.request("PUT", f"/objects/{digest}", content=data, headers={"Content-Type": "application/octet-stream"})


def _upload_one(transport: Transport, src: ObjectStore, digest: Digest, where: str) -> int:
    try:
        size = src.info(digest).size
        if size <= PIECES_OVER:
            with src.open(digest, verify=False) as stream:
                data = stream.read(PIECES_OVER + 1)
    except NotFound:
        raise IntegrityError(f"object {digest} is missing on {where}", hint=f"run `labvault fsck` on {where}") from None
    if size > PIECES_OVER:
        upload_stream(
            transport,
            digest,
            size,
            lambda: src.open(digest, verify=False),
            chunk_size=CHUNK,
            piece_size=PIECE,
            state_dir=uploads_dir(),
            sent=lambda: None,
            mismatch=lambda: _corrupt(digest, where),
        )
        return size
    if hashlib.sha256(data).hexdigest() != digest.hex:
        raise _corrupt(digest, where)
    _put(transport, digest, data)
    return len(data)


def upload_objects(
    transport: Transport,
    src: ObjectStore,
    digests: Sequence[Digest],
    *,
    where: str,
    jobs: int,
    progress: Callable[[int, int, int], None] | None = None,
    total: int | None = None,
    already: int = 0,
) -> UploadStats:
    """Send ``digests`` (which the server lacks) from ``src``; ``progress(done, total, bytes)`` after each."""
    stats = UploadStats()
    lock = threading.Lock()
    count = len(digests) + already if total is None else total

    def sent(objects: int, size: int) -> None:
        with lock:
            stats.objects += objects
            stats.bytes += size
            if progress is not None:
                progress(already + stats.objects, count, stats.bytes)

    batching = [True]  # False once the server says it has no batch routes (an older server)

    def flush(body: bytearray, framed: list[tuple[Digest, bytes]]) -> None:
        if batching[0]:
            try:
                _put_batch(transport, body)
                sent(len(framed), sum(len(data) for _, data in framed))
                return
            except LabvaultError as err:
                if not frames.no_batch_route(err):
                    raise
                batching[0] = False
        for digest, data in framed:
            _put(transport, digest, data)
            sent(1, len(data))

    def send(group: list[Digest]) -> None:
        """Small objects framed into batches as they are read; a bigger one goes alone."""
        body = bytearray(frames.MAGIC)
        framed: list[tuple[Digest, bytes]] = []
        for digest in group:
            head = _read_small(src, digest, where)
            if head is None:
                sent(1, _upload_one(transport, src, digest, where))
                continue
            if framed and (len(framed) >= frames.MAX_COUNT or len(body) + frames.HEADER + len(head) > frames.MAX_BODY):
                flush(body, framed)
                body, framed = bytearray(frames.MAGIC), []
            body += frames.frame(digest.hex, head)
            framed.append((digest, head))
        if framed:
            flush(body, framed)

    groups = [list(digests[i : i + frames.MAX_COUNT]) for i in range(0, len(digests), frames.MAX_COUNT)]
    if jobs <= 1 or len(groups) <= 1:
        for group in groups:
            send(group)
        return stats
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="labvault-push") as pool:
        for future in [pool.submit(send, g) for g in groups]:
            future.result()
    return stats


def _read_small(src: ObjectStore, digest: Digest, where: str) -> bytes | None:
    """The verified bytes of an object that fits a batch; None for a bigger one."""
    limit = min(frames.MAX_OBJECT, PIECES_OVER)
    try:
        with src.open(digest, verify=False) as stream:
            head = stream.read(limit + 1)
    except NotFound:
        raise IntegrityError(f"object {digest} is missing on {where}", hint=f"run `labvault fsck` on {where}") from None
    if len(head) > limit:
        return None
    if hashlib.sha256(head).hexdigest() != digest.hex:
        raise _corrupt(digest, where)
    return head


def _put_batch(transport: Transport, body: bytearray) -> None:
    # Safe to repeat (storing an object twice is a no-op): the key lets the transport retry it.
    transport.request(
        "POST",
        "/objects/batch",
        content=bytes(body),
        headers={"Content-Type": "application/octet-stream"},
        idempotency_key=uuid.uuid4().hex,
    )


class ServerSource:
    """The server's objects as the sending side of a pull: ``get_bytes`` and ``open``, nothing else.
    Nothing it returns is trusted: trees are hashed by ``reachable``, objects by the receiving store."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._small: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.batches = True  # False once the server says it has no batch routes (an older server)

    def get_bytes(self, digest: Digest, *, verify: bool = False) -> bytes:
        with self._lock:
            cached = self._small.get(digest.hex)
        if cached is not None:
            return cached
        with self._download(digest) as spool:
            data = spool.read()
        if len(data) <= _TREE_CACHE:
            with self._lock:
                self._small[digest.hex] = data
        return data

    def get_many(self, digests: Sequence[Digest], *, where: str) -> tuple[dict[str, bytes], list[str]]:
        """The verified bytes of those ``digests`` (up to 1,000) small enough for a batch, in few requests
        (those already read, trees, come from memory); and the hex digests to fetch one by one."""
        got: dict[str, bytes] = {}
        with self._lock:
            for digest in digests:
                cached = self._small.pop(digest.hex, None)
                if cached is not None:
                    got[digest.hex] = cached
        rest = [d for d in digests if d.hex not in got]
        if not rest:
            return got, []
        if not self.batches:
            return got, [d.hex for d in rest]
        try:
            fetched, alone = frames.fetch_batch(self._transport, rest, where=where)
        except LabvaultError as err:
            if not frames.no_batch_route(err):
                raise
            self.batches = False  # an older server: one by one, as before
            return got, [d.hex for d in rest]
        got.update(fetched)
        return got, alone

    @contextmanager
    def open(self, digest: Digest, *, verify: bool = False) -> Iterator[IO[bytes]]:
        with self._lock:
            cached = self._small.pop(digest.hex, None)
        if cached is not None:
            yield io.BytesIO(cached)
            return
        with self._download(digest) as spool:
            yield spool

    @contextmanager
    def _download(self, digest: Digest) -> Iterator[IO[bytes]]:
        # Spooled: small objects stay in memory, big ones go to an anonymous temp file; the response
        # is closed before the bytes are used, so a slow receiving store holds no connection.
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            # Not hashed by the server: what this returns is hashed by whoever takes it (see above).
            with self._transport.stream("GET", f"/objects/{digest}", headers=CLIENT_VERIFIES) as response:
                for block in response.iter_bytes():
                    spool.write(block)
            spool.seek(0)
            yield spool  # type: ignore[misc]


@dataclass(slots=True)
class DownloadStats:
    objects: int = 0
    bytes: int = 0
    present: int = 0


def download_objects(
    source: ServerSource,
    dst: ObjectStore,
    digests: Sequence[Digest],
    *,
    where: str,
    jobs: int,
    progress: Callable[[int, int, int], None] | None = None,
) -> DownloadStats:
    """Fetch every digest ``dst`` lacks, ``jobs`` downloads at a time, each hashed by ``dst`` as it is
    stored (a mismatch is refused, exit 5). Each worker stores :data:`_PER_BATCH` objects per batch of
    ``dst``, so durability is paid once a batch, not once an object."""
    stats = DownloadStats()
    lock = threading.Lock()
    lacking = [d for d in digests if not dst.has(d)]
    stats.present = len(digests) - len(lacking)
    groups = [lacking[i : i + _PER_BATCH] for i in range(0, len(lacking), _PER_BATCH)]

    def done(size: int) -> None:
        with lock:
            stats.objects += 1
            stats.bytes += size
            if progress is not None:
                progress(stats.present + stats.objects, len(digests), stats.bytes)

    def check(digest: Digest, got: Digest) -> None:
        if got != digest:
            raise IntegrityError(
                f"object {digest} on {where} is corrupt (it arrived as {got})",
                hint=f"run `labvault fsck` on {where}; nothing was recorded here",
            )

    def fetch(group: list[Digest]) -> None:
        try:
            small, alone = source.get_many(group, where=where)
        except NotFound as exc:
            raise IntegrityError(f"{where}: {exc.message}", hint=f"run `labvault fsck` on {where}") from None
        with dst.batch():
            for hexd, data in small.items():
                check(Digest(hexd), dst.put_bytes(data))
                done(len(data))
            for digest in (Digest(h) for h in alone):
                try:
                    with source.open(digest) as stream:
                        got = _store(dst, stream)
                        size = stream.tell()
                except NotFound:
                    raise IntegrityError(
                        f"object {digest} is missing on {where}", hint=f"run `labvault fsck` on {where}"
                    ) from None
                check(digest, got)
                done(size)

    if jobs <= 1 or len(groups) <= 1:
        for group in groups:
            fetch(group)
        return stats
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="labvault-pull") as pool:
        for future in [pool.submit(fetch, g) for g in groups]:
            future.result()
    return stats


def _store(dst: ObjectStore, stream: IO[bytes]) -> Digest:
    put_stream = getattr(dst, "put_stream", None)
    if put_stream is not None:
        digest: Digest = put_stream(stream)
        return digest
    return dst.put_bytes(stream.read())
