"""Upload sessions: one large object sent in pieces, each written at its offset into one temp file.

A session is two entries of the store's ``tmp/``::

    upload-<id>       the object's bytes, each piece written at its offset as it arrives (not synced)
    upload-<id>.log   ``labvault-upload 1 <sha256 hex> <size>``, then two lines per piece: before
                      it is written ``<offset> <write id>``, after ``<offset> <length> <write id>``
                      (what arrived, for a client that resumes)

Commit checks that every byte arrived, hashes the file, and only when it hashes to the digest the
session was opened for makes it durable (one fsync) and renames it into place: the bytes are
written once, and no partial object is ever visible. A process hashes the pieces that arrive in
order as they are written, so commit re-reads only what it did not see arrive in order (all of
it when the pieces came out of order, or through another server process).

Pieces are written under a shared ``flock`` of the log and commit takes it exclusively, so no
piece is ever written into a file once it has become an object. Every piece touches both files:
``gc`` removes a session untouched for longer than its grace period (a killed client's), as it
does any other entry of ``tmp/`` that no live writer's lock names.

Every function raises labvault errors (``OSError`` translated here).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import queue
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from labvault.errors import CheckFailed, LockedError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.storage.objects.fileio import SMALL, WRITE_SLICE, pwrite_all, start_writeback, write_all
from labvault.storage.space import translate_os_error

if TYPE_CHECKING:
    from labvault.storage.objects.local import LocalObjectStore

__all__ = ["MAX_UPLOAD", "Session", "UploadSessions"]

#: The largest object one session may carry (1 TiB).
MAX_UPLOAD = 1 << 40
_ID = re.compile(r"[0-9a-f]{32}")
_HEADER = re.compile(r"labvault-upload 1 ([0-9a-f]{64}) (\d{1,14})\n")
_RECORD = re.compile(r"(\d{1,14}) (?:(\d{1,14}) )?([0-9a-f]{16})")  # a piece about to be written, or written
_MAX_LOG = 8 << 20  # about 200,000 pieces: a session that needs more is refused
_HASH_STEP = 64 << 20
_HASH_BEHIND = 8  # slices (of WRITE_SLICE bytes) written and not yet hashed, at most
_WRITE_BEHIND = 4 << 20  # writeback is started for every 4 MiB written (blocks come as the socket gave them)
_KEPT = 256  # sessions whose in-order hash a process keeps at most (abandoned ones are forgotten)


@dataclass(frozen=True, slots=True)
class Session:
    """What a session has received: ``received`` is sorted, merged ``(start, end)`` spans, end exclusive."""

    id: str
    digest: Digest
    size: int
    received: tuple[tuple[int, int], ...]

    @property
    def complete(self) -> bool:
        return self.received == ((0, self.size),) or self.size == 0


class _Hashed:
    """The bytes ``[0, upto)`` of a session hashed as they were written by this process."""

    __slots__ = ("hasher", "lock", "upto", "writes")

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.upto = 0
        self.writes: set[str] = set()  # the ids of those pieces: any other write that began there spoils it
        self.lock = threading.Lock()


class _HashBehind:
    """Hashes, in a thread of its own and in order, the slices written: the next slice is written
    (the kernel copying it into the page cache) while this one is hashed, on the other core. A few
    slices behind at most, so that each is hashed while it is still in the shared cache."""

    __slots__ = ("_hashed", "_queue", "_thread")

    def __init__(self, hashed: _Hashed) -> None:
        self._hashed = hashed
        self._queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=_HASH_BEHIND)
        self._thread = threading.Thread(target=self._run, name="labvault-upload-hash", daemon=True)
        self._thread.start()

    def add(self, part: memoryview) -> None:
        self._queue.put(part)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        hashed = self._hashed
        while (part := self._queue.get()) is not None:
            hashed.hasher.update(part)
            hashed.upto += len(part)


class UploadSessions:
    """The upload sessions of a local object store."""

    def __init__(self, store: LocalObjectStore) -> None:
        self._store = store
        self._hashed: dict[str, _Hashed] = {}
        self._guard = threading.Lock()

    # -- paths ----------------------------------------------------------------------------------
    def _data(self, upload_id: str) -> str:
        return f"{self._store.tmp_dir}/upload-{upload_id}"

    def _log(self, upload_id: str) -> str:
        return f"{self._store.tmp_dir}/upload-{upload_id}.log"

    # -- the verbs ------------------------------------------------------------------------------
    def begin(self, digest: Digest, size: int) -> Session:
        """Open a session for an object of ``size`` bytes that must hash to ``digest``."""
        if not 0 <= size <= MAX_UPLOAD:
            raise ValidationError(f"an upload's size is 0 to {MAX_UPLOAD} bytes, not {size}", hint="send its size")
        upload_id = secrets.token_hex(16)
        try:
            os.close(os.open(self._data(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
            fd = os.open(self._log(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                write_all(fd, f"labvault-upload 1 {digest.hex} {size}\n".encode())
            finally:
                os.close(fd)
        except OSError as exc:
            self._remove(upload_id)
            raise translate_os_error(exc, self._store.vault_dir, "opening an upload") from exc
        self._remember(upload_id)
        return Session(upload_id, digest, size, ())

    def status(self, upload_id: str) -> Session:
        with self._open_log(upload_id) as fd:
            return _read_session(upload_id, fd)

    def write(self, upload_id: str, offset: int, read: Callable[[], bytes]) -> Session:
        """Write the blocks ``read()`` yields (``b""`` at the end) at ``offset``; what the session then holds.

        What was written before a failure (a client gone mid-piece) is kept and recorded: a resume
        sends only the rest."""
        with self._open_log(upload_id) as log:
            fcntl.flock(log, fcntl.LOCK_SH)  # released when the log is closed
            session = _read_session(upload_id, log, records=False)
            if not 0 <= offset <= session.size:
                raise ValidationError(
                    f"offset {offset} is outside the upload (0-{session.size})", hint="send pieces inside the object"
                )
            if os.fstat(log).st_size > _MAX_LOG:
                raise ValidationError(
                    f"upload {upload_id} has taken too many pieces", hint="send larger pieces in a new upload"
                )
            try:
                data = os.open(self._data(upload_id), os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise _no_session(upload_id) from None
            except OSError as exc:
                raise translate_os_error(exc, self._store.vault_dir, "writing an upload") from exc
            write_id = secrets.token_hex(8)
            try:  # announced first: a hash taken in order is trusted only if no other write began inside it
                write_all(log, f"{offset} {write_id}\n".encode())
            except OSError as exc:
                os.close(data)
                raise translate_os_error(exc, self._store.vault_dir, "writing an upload") from exc
            hashed = self._hashed.get(upload_id)
            if hashed is not None and not hashed.lock.acquire(blocking=False):
                hashed = None  # another piece is being hashed: this one is hashed at commit
            if hashed is not None and hashed.upto != offset:
                hashed.lock.release()
                hashed = None
            pos = behind = offset
            behind_hash = _HashBehind(hashed) if hashed is not None else None
            try:
                while block := read():
                    if pos + len(block) > session.size:
                        raise ValidationError(
                            f"the piece runs past the end of the upload ({session.size} bytes)",
                            hint="send pieces inside the object",
                        )
                    view = memoryview(block)
                    for at in range(0, len(block), WRITE_SLICE):
                        part = view[at : at + WRITE_SLICE]
                        pwrite_all(data, part, pos + at)
                        if behind_hash is not None:
                            behind_hash.add(part)
                    pos += len(block)
                    if pos - behind >= _WRITE_BEHIND:
                        start_writeback(data, behind, pos - behind)
                        behind = pos
                if pos > behind:  # (a length of 0 would mean "to the end of the file")
                    start_writeback(data, behind, pos - behind)
            except OSError as exc:
                raise translate_os_error(exc, self._store.vault_dir, "writing an upload") from exc
            finally:
                os.close(data)
                if behind_hash is not None:
                    behind_hash.close()  # every slice written is hashed before the hash is trusted again
                if hashed is not None:
                    hashed.writes.add(write_id)
                    hashed.lock.release()
                if pos > offset:  # recorded even when the body broke off: those bytes are written
                    with contextlib.suppress(OSError):
                        write_all(log, f"{offset} {pos - offset} {write_id}\n".encode())
            return _read_session(upload_id, log)

    def commit(self, upload_id: str) -> tuple[Digest, bool, int]:
        """Store the session's bytes as its object, if they are all there and hash to its digest:
        ``(digest, created, size)``. A mismatch ends the session with nothing stored."""
        with self._open_log(upload_id) as log:
            try:
                fcntl.flock(log, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(
                    f"a piece of upload {upload_id} is still being written", hint="wait for it, then commit again"
                ) from None
            session, writes = _read_session_writes(upload_id, log)
            if not session.complete:
                first = _first_gap(session)
                raise ValidationError(
                    f"upload {upload_id} lacks bytes from offset {first}; nothing was stored",
                    hint=f"send the missing pieces (GET /api/v1/objects/uploads/{upload_id} lists what arrived)",
                )
            try:
                got = self._digest_of(upload_id, session, writes)
                if got != session.digest.hex:
                    self._remove(upload_id)
                    raise CheckFailed(
                        f"the uploaded bytes hash to sha256:{got}, not {session.digest}; nothing was stored",
                        hint="send the object again; it was corrupted on the way",
                    )
                created = self._store_file(upload_id, session)
            finally:
                with self._guard:
                    self._hashed.pop(upload_id, None)
            with contextlib.suppress(OSError):
                os.unlink(self._log(upload_id))
        return session.digest, created, session.size

    def abort(self, upload_id: str) -> None:
        with self._open_log(upload_id) as log:
            fcntl.flock(log, fcntl.LOCK_EX)
            self._remove(upload_id)

    # -- helpers ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _open_log(self, upload_id: str) -> Iterator[int]:
        if not _ID.fullmatch(upload_id):
            raise _no_session(upload_id[:40])
        try:
            fd = os.open(self._log(upload_id), os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            raise _no_session(upload_id) from None
        except OSError as exc:
            raise translate_os_error(exc, self._store.vault_dir, "opening an upload") from exc
        try:
            yield fd
        finally:
            os.close(fd)

    def _remember(self, upload_id: str) -> None:
        with self._guard:
            if len(self._hashed) >= _KEPT:
                self._hashed.pop(next(iter(self._hashed)))
            self._hashed[upload_id] = _Hashed()

    def _digest_of(self, upload_id: str, session: Session, writes: list[tuple[int, str]]) -> str:
        """The sha256 of the session's file: what this process hashed in order, then the rest re-read."""
        with self._guard:
            hashed = self._hashed.get(upload_id)
        if hashed is not None and any(off < hashed.upto and wid not in hashed.writes for off, wid in writes):
            hashed = None  # another write landed in what was hashed: its hash no longer names the file
        hasher = hashed.hasher.copy() if hashed is not None else hashlib.sha256()
        start = hashed.upto if hashed is not None else 0
        try:
            fd = os.open(self._data(upload_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise _no_session(upload_id) from None
        try:
            if os.fstat(fd).st_size != session.size:
                raise CheckFailed(
                    f"upload {upload_id} holds {os.fstat(fd).st_size} bytes, not {session.size}",
                    hint="send the object again in a new upload",
                )
            _hash_range(fd, hasher, start, session.size)
        finally:
            os.close(fd)
        return hasher.hexdigest()

    def _store_file(self, upload_id: str, session: Session) -> bool:
        """The verified file as its object (renamed into place, or packed when small); False if stored."""
        path = self._data(upload_id)
        try:
            if session.size > SMALL:
                return self._store.adopt_temp(path, session.digest.hex)
            existed = self._store.has(session.digest)
            with open(path, "rb") as f:
                self._store.put_bytes(f.read())  # small objects live in packs
            os.unlink(path)
            return not existed
        except OSError as exc:
            raise translate_os_error(exc, self._store.vault_dir, "storing an upload") from exc

    def _remove(self, upload_id: str) -> None:
        with self._guard:
            self._hashed.pop(upload_id, None)
        for path in (self._data(upload_id), self._log(upload_id)):  # the log last: it names the session
            with contextlib.suppress(OSError):
                os.unlink(path)


def _hash_range(fd: int, hasher: hashlib._Hash, start: int, end: int) -> None:
    """Hash bytes ``[start, end)`` of ``fd`` through read-only mappings (no copy into Python buffers)."""
    pos = start
    while pos < end:
        base = pos - pos % mmap.ALLOCATIONGRANULARITY
        length = min(end, base + _HASH_STEP) - base
        with mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=base) as mapped:
            view = memoryview(mapped)
            try:
                hasher.update(view[pos - base :])
            finally:
                view.release()
        pos = base + length


def _read_session(upload_id: str, fd: int, *, records: bool = True) -> Session:
    session, _ = _read_session_writes(upload_id, fd, records=records)
    return session


def _read_session_writes(upload_id: str, fd: int, *, records: bool = True) -> tuple[Session, list[tuple[int, str]]]:
    """Decode a session's log: what arrived, and every write that began (offset, id). The log is
    untrusted: a torn last line is skipped, and records outside the object are ignored."""
    text = os.pread(fd, _MAX_LOG + 4096 if records else 128, 0).decode("ascii", "replace")
    head, _, rest = text.partition("\n")
    match = _HEADER.fullmatch(head + "\n")
    if match is None:
        raise _no_session(upload_id)
    digest, size = Digest(match.group(1)), int(match.group(2))
    written: list[tuple[int, int]] = []
    began: list[tuple[int, str]] = []
    for line in rest.split("\n") if records else ():
        found = _RECORD.fullmatch(line)
        if found is None:
            continue
        off = int(found.group(1))
        began.append((off, found.group(3)))
        if found.group(2) is not None and off + int(found.group(2)) <= size:
            written.append((off, int(found.group(2))))
    return Session(upload_id, digest, size, _merge(written)), began


def _merge(written: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    spans: list[tuple[int, int]] = []
    for off, length in sorted(written):
        if length == 0:
            continue
        if spans and off <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], off + length))
        else:
            spans.append((off, off + length))
    return tuple(spans)


def _first_gap(session: Session) -> int:
    if not session.received or session.received[0][0] > 0:
        return 0
    return session.received[0][1]


def _no_session(upload_id: str) -> NotFound:
    return NotFound(
        f"no upload session {upload_id!r} (committed, aborted, or swept as abandoned)",
        hint="start a new upload: POST /api/v1/objects/{digest}/uploads",
    )
