"""The audit log: append-only events, each hash-chained to the one before it.

Each event stores ``hash = sha256(canonical JSON of {seq, at, actor, action, subject, before, after,
policy_hash, details, prev_hash})``. The head of the chain (last seq and hash) is kept twice outside
the events table: in the ``vault_meta`` row that appends lock (same transaction as the event), and
in ``<vault>/audit-head``, a one-line file rewritten in place (one small write) after each commit.
``verify`` re-hashes the whole chain and compares its end with both, so an edited, deleted or
truncated history is caught.

The head file may lag one commit behind after a crash between the commit and the file write; verify
accepts a head file that names an event of the chain and reports the lag as a note.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from labvault.entities import AuditEvent, AuditReport, format_time, utcnow
from labvault.errors import StorageError, ValidationError
from labvault.refs import check_utf8
from labvault.storage.locks import file_lock
from labvault.storage.meta.repos import audit as repo
from labvault.storage.meta.store import MetaStore

__all__ = ["AuditLog", "canonical_json", "event_hash"]

HEAD_FILE = "audit-head"
_RECORD = 96  # bytes: "<seq> sha256:<64 hex>" padded, one write, far below a sector


def _safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


def canonical_json(doc: Any) -> str:
    """Sorted keys, no whitespace, UTF-8, NaN as strings: one byte sequence per value."""
    return _dumps(_safe(doc))


def _dumps(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _hashed_doc(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": format_time(event.at),
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "before": event.before,
        "after": event.after,
        "policy_hash": event.policy_hash,
        "details": event.details,
        "prev_hash": event.prev_hash,
    }


def event_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical_json(_hashed_doc(event)).encode()).hexdigest()


class AuditLog:
    def __init__(self, *, meta: MetaStore, vault_dir: Path) -> None:
        self._meta = meta
        self.head_path = vault_dir / HEAD_FILE
        self._lock_path = vault_dir / "locks" / "audit-head.lock"

    def lock(self, conn: Connection) -> tuple[int, str]:
        """Take the chain head lock now (callers lock it first, so writers lock in one order);
        pass what it returns to :meth:`append` as ``head``."""
        return repo.lock_head(conn)

    def append(
        self,
        conn: Connection,
        *,
        actor: str,
        action: str,
        subject: str,
        before: str | None = None,
        after: str | None = None,
        policy_hash: str | None = None,
        details: dict[str, Any] | None = None,
        now: datetime | None = None,
        head: tuple[int, str] | None = None,
    ) -> AuditEvent:
        """Append one event inside the caller's transaction; call :meth:`publish` after it commits.

        ``head`` is what :meth:`lock` returned earlier in the same transaction (else it is locked here).
        """
        seq, prev = head if head is not None else repo.lock_head(conn)
        details_json = canonical_json(details or {})
        # Rounded to microseconds as the database stores them, so the hash survives the round trip.
        event = AuditEvent(
            seq=seq + 1,
            at=now or utcnow(),
            actor=actor,
            action=action,
            subject=subject,
            before=before,
            after=after,
            policy_hash=policy_hash,
            details=json.loads(details_json),
            prev_hash=prev,
            hash="",
        )
        # The details were made canonical above and the other fields are strings, integers or None:
        # the same bytes as event_hash, without walking the details again.
        digest = hashlib.sha256(_dumps(_hashed_doc(event)).encode()).hexdigest()
        event = dataclasses.replace(event, hash=digest)
        repo.insert_event(conn, event, details_json)
        repo.set_head(conn, event.seq, digest)
        return event

    def publish(self, event: AuditEvent | None) -> None:
        """Record the chain head in the head file, never moving it backwards.

        The record is one fixed-width line rewritten in place by a single write far smaller than a
        disk sector, under an exclusive lock: a reader (holding the lock shared) sees the old or
        the new head, never a mix. No fsync: the database commit is the durable record and this
        file a cross-check that verify allows to lag behind it.
        """
        if event is None:
            return
        record = f"{event.seq} sha256:{event.hash}".ljust(_RECORD - 1).encode() + b"\n"
        try:
            with file_lock(self._lock_path, timeout=60, what="the audit head file"):
                fd = os.open(self.head_path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    current = _parse_head_file(os.pread(fd, _RECORD, 0))
                    if current is None or current[0] < event.seq:
                        os.pwrite(fd, record, 0)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise StorageError(f"cannot write {self.head_path}: {exc.strerror}") from exc

    def _read_head_file(self) -> tuple[int, str] | None:
        try:
            with file_lock(self._lock_path, shared=True, timeout=60, what="the audit head file"):
                data = self.head_path.read_bytes()
        except FileNotFoundError:
            return None
        return _parse_head_file(data) if data else (-1, "")

    # -- reading ------------------------------------------------------------------------------
    def events(
        self,
        *,
        subject_prefix: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[AuditEvent]:
        if limit is not None and not 0 <= limit <= 2**63 - 1:  # SQL's LIMIT is a 64-bit integer
            raise ValidationError(f"invalid limit {limit}", hint="give a limit from 1 to 2^63-1")
        if subject_prefix is not None:
            check_utf8(subject_prefix, what="subject")
        with self._meta.read() as conn:
            return [
                e
                for e, _ in repo.iter_events(
                    conn, subject_prefix=subject_prefix, action=action, limit=limit, newest_first=newest_first
                )
            ]

    def verify(self) -> AuditReport:
        problems: list[str] = []
        notes: list[str] = []
        first_bad: int | None = None
        expected_seq = 1
        prev = repo.GENESIS_HASH
        count = 0
        last: AuditEvent | None = None

        def bad(seq: int, text: str) -> None:
            nonlocal first_bad
            problems.append(text)
            if first_bad is None:
                first_bad = seq

        # The file first: it is written after each commit, so it can only be behind what is read next.
        file_head = self._read_head_file()
        file_hash: str | None = repo.GENESIS_HASH if file_head is not None and file_head[0] == 0 else None
        with self._meta.read() as conn:
            # Shared lock on the head row (PostgreSQL): appends wait, so the head and the events agree.
            db_head = repo.read_head(conn, share_lock=True)
            for event, _raw in repo.iter_events(conn):
                count += 1
                if file_head is not None and event.seq == file_head[0]:
                    file_hash = event.hash
                label = f"event #{event.seq} ({event.action} {event.subject})"
                if event.seq != expected_seq:
                    missing = (
                        f"#{expected_seq}" if event.seq == expected_seq + 1 else f"#{expected_seq}..#{event.seq - 1}"
                    )
                    bad(expected_seq, f"event {missing} is missing: deleted from the history")
                if event.prev_hash != prev:
                    bad(event.seq, f"{label} does not chain to the event before it")
                if event_hash(event) != event.hash:
                    bad(event.seq, f"{label} was altered: its hash does not match its content")
                prev = event.hash
                expected_seq = event.seq + 1
                last = event
        last_seq, last_hash = (last.seq, last.hash) if last else (0, repo.GENESIS_HASH)
        if db_head is None:
            bad(last_seq, "the chain head record in the database is missing")
        elif db_head != (last_seq, last_hash):
            if db_head[0] > last_seq:
                bad(
                    last_seq + 1,
                    f"history truncated: the database head records event #{db_head[0]}, the log ends at #{last_seq}",
                )
            else:
                bad(db_head[0], f"the database head (event #{db_head[0]}) does not match the log's end")
        if file_head is None:
            if last_seq > 0:
                bad(last_seq, f"the head file {self.head_path.name} is missing")
        elif file_head[0] < 0:
            bad(last_seq, f"the head file {self.head_path.name} is unreadable")
        elif file_head[0] > last_seq:
            bad(
                last_seq + 1,
                f"history truncated: the head file records event #{file_head[0]}, the log ends at #{last_seq}",
            )
        else:
            if file_hash != file_head[1]:
                bad(file_head[0], f"event #{file_head[0]} differs from the one the head file recorded")
            elif file_head[0] < last_seq:
                notes.append(f"the head file lags at event #{file_head[0]} (an interrupted write); the chain is intact")
        return AuditReport(
            ok=not problems,
            events=count,
            head=f"sha256:{last_hash}" if last else None,
            problems=tuple(problems),
            first_bad=first_bad,
            notes=tuple(notes),
        )


def _parse_head_file(data: bytes) -> tuple[int, str] | None:
    """``(seq, hex)``; None for an empty (new) file; ``(-1, text)`` when unreadable."""
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    seq, _, digest = text.partition(" ")
    try:
        return int(seq), digest.removeprefix("sha256:")
    except ValueError:
        return -1, text
