"""The audit log: append-only events, each hash-chained to the one before it.

Each event stores ``hash = sha256(canonical JSON of {seq, at, actor, action, subject, before, after,
policy_hash, details, prev_hash})``, with ``details`` exactly the canonical JSON text stored in its
column: ``verify`` hashes the stored text, so a byte changed there is caught even when it decodes to
the same value. The head of the chain (last seq and hash) is kept twice outside the events table: in
the ``vault_meta`` row that appends lock (same transaction as the event), and in ``<vault>/audit-head``,
a one-line file rewritten in place after each commit.

The head file lags at most one event: a crash between a commit and the file write leaves it one
behind, and the next append first brings it up to the database head (under the head row's lock) before
it adds its own event. A writer only moves the file forward from a head that is still an event of the
chain, so a history rewritten behind labvault's back stays visible after later appends. ``verify``
re-hashes the chain and compares its end with both heads (and with a head kept elsewhere, ``against``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from labvault.entities import AuditEvent, AuditReport, format_time, json_safe, utcnow
from labvault.errors import StorageError, ValidationError
from labvault.refs import check_utf8
from labvault.safeload import loads_json
from labvault.storage.locks import file_lock
from labvault.storage.meta.repos import audit as repo
from labvault.storage.meta.store import Connection, MetaStore

__all__ = ["AuditLog", "canonical_json", "event_hash", "parse_anchor", "stored_hash"]

HEAD_FILE = "audit-head"
_RECORD = 96  # bytes: "<seq> sha256:<64 hex>" padded, one write, far below a sector


def canonical_json(doc: Any) -> str:
    """Sorted keys, no whitespace, UTF-8, NaN as strings: one byte sequence per value."""
    return _dumps(json_safe(doc))


def _dumps(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_HASHED = sorted(("seq", "at", "actor", "action", "subject", "before", "after", "policy_hash", "details", "prev_hash"))


def _hashed_text(event: AuditEvent, details_text: str) -> str:
    """The canonical JSON that is hashed, with ``details_text`` placed as it is (the stored bytes)."""
    fields: dict[str, Any] = {
        "seq": event.seq,
        "at": format_time(event.at),
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "before": event.before,
        "after": event.after,
        "policy_hash": event.policy_hash,
        "prev_hash": event.prev_hash,
    }
    return "{" + ",".join(f'"{k}":' + (details_text if k == "details" else _dumps(fields[k])) for k in _HASHED) + "}"


def stored_hash(event: AuditEvent, details_text: str) -> str:
    """The hash of an event as stored: its columns and the ``details`` text exactly as read back."""
    return hashlib.sha256(_hashed_text(event, details_text).encode()).hexdigest()


def event_hash(event: AuditEvent) -> str:
    """The hash of an event whose ``details`` are written as canonical JSON (as ``append`` stores them)."""
    return stored_hash(event, canonical_json(event.details))


class AuditLog:
    def __init__(self, *, meta: MetaStore, vault_dir: Path, shared_head: bool = False) -> None:
        """``shared_head``: many machines append to this database (a team vault), each keeping its
        own head file, which may then be missing or behind (see :meth:`_check_head_file`)."""
        self._meta = meta
        self._shared_head = shared_head
        self.head_path = vault_dir / HEAD_FILE
        self._lock_path = vault_dir / "locks" / "audit-head.lock"

    def lock(self, conn: Connection) -> tuple[int, str]:
        """Take the chain head lock now (callers lock it first, so writers lock in one order);
        pass what it returns to :meth:`append` as ``head``.

        Before anything is appended, the head file is brought up to the database head: an earlier
        writer that committed but died before writing the file left it one event behind, and this
        keeps it from falling two behind.
        """
        head = repo.lock_head(conn)
        if head[0] > 0:
            # Almost always the file already names this head (its writer published it).
            self._advance(head, vouched=lambda seq, digest: repo.hash_at(conn, seq) == digest, unless_current=True)
        return head

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
        # The hash covers the details text as stored, so verify can hash what it reads back.
        event = dataclasses.replace(event, hash=stored_hash(event, details_json))
        repo.insert_event(conn, event, details_json)
        repo.set_head(conn, event.seq, event.hash)
        return event

    def publish(self, event: AuditEvent | None) -> None:
        """Record the chain head in the head file after the event's commit.

        The file moves forward only from the event this one chains to (or from nothing): a head file
        naming anything else is evidence of a rewritten history and is left as it is for verify.
        """
        if event is None:
            return
        self._advance(
            (event.seq, event.hash), vouched=lambda seq, digest: (seq, digest) == (event.seq - 1, event.prev_hash)
        )

    def _says(self, record: bytes) -> bool:
        """Whether the head file holds ``record``, read without the lock: a read that meets a write
        in progress differs from any whole record, and the caller then takes the locked path."""
        try:
            fd = os.open(self.head_path, os.O_RDONLY)
        except OSError:
            return False
        try:
            return os.pread(fd, _RECORD, 0) == record
        except OSError:
            return False
        finally:
            os.close(fd)

    def _advance(
        self, head: tuple[int, str], *, vouched: Callable[[int, str], bool], unless_current: bool = False
    ) -> None:
        """Rewrite the head file to ``head`` if it is missing, or behind and ``vouched(seq, hash)``.

        The record is one fixed-width line rewritten in place by a single write far smaller than a
        disk sector, under an exclusive lock: a reader (holding the lock shared) sees the old or the
        new head, never a mix. No fsync: the database commit is the durable record.
        """
        seq, digest = head
        record = f"{seq} sha256:{digest}".ljust(_RECORD - 1).encode() + b"\n"
        if unless_current and self._says(record):
            return
        try:
            with file_lock(self._lock_path, timeout=60, what="the audit head file"):
                fd = os.open(self.head_path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    current = _parse_head_file(os.pread(fd, _RECORD, 0))
                    if current is None or (0 <= current[0] < seq and vouched(*current)):
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

    def verify(self, *, against: str | None = None) -> AuditReport:
        """Re-hash the chain as stored and compare its end with both heads, and with ``against`` (a
        head kept elsewhere: ``SEQ sha256:HEX``, ``sha256:HEX``, or a file holding one of them or the
        JSON of ``audit verify --json``), which must name an event of the chain."""
        anchor = parse_anchor(against) if against is not None else None
        problems: list[tuple[int, str]] = []
        notes: list[str] = []
        expected_seq = 1
        prev = repo.GENESIS_HASH
        hashes: dict[int, str] = {}
        # A write transaction (BEGIN IMMEDIATE on SQLite; the head row's share lock on PostgreSQL):
        # appends wait, so the events, the database head and the head file are read at one moment,
        # and the file can only lag an append that committed and has not written it yet.
        with self._meta.transaction() as conn:
            db_head = repo.read_head(conn, share_lock=True)
            file_head = self._read_head_file()
            for event, raw in repo.iter_events(conn):
                hashes[event.seq] = event.hash
                label = f"event #{event.seq} ({event.action} {event.subject})"
                if event.seq != expected_seq:
                    missing = (
                        f"#{expected_seq}" if event.seq == expected_seq + 1 else f"#{expected_seq}..#{event.seq - 1}"
                    )
                    problems.append((expected_seq, f"event {missing} is missing: deleted from the history"))
                if event.prev_hash != prev:
                    problems.append((event.seq, f"{label} does not chain to the event before it"))
                if stored_hash(event, raw) != event.hash:
                    problems.append((event.seq, f"{label} was altered: its hash does not match its stored content"))
                prev = event.hash
                expected_seq = event.seq + 1
        count = len(hashes)
        last_seq = max(hashes, default=0)
        last_hash = hashes.get(last_seq, repo.GENESIS_HASH)
        hashes.setdefault(0, repo.GENESIS_HASH)
        if db_head is None:
            problems.append((last_seq, "the chain head record in the database is missing"))
        elif db_head != (last_seq, last_hash):
            if db_head[0] > last_seq:
                text = f"history truncated: the database head records event #{db_head[0]}, the log ends at #{last_seq}"
                problems.append((last_seq + 1, text))
            else:
                problems.append((db_head[0], f"the database head (event #{db_head[0]}) does not match the log's end"))
        problems.extend(self._check_head_file(file_head, hashes, last_seq, notes))
        if anchor is not None:
            problems.extend(_check_anchor(anchor, hashes, last_seq, notes))
        problems.sort(key=lambda p: p[0])
        return AuditReport(
            ok=not problems,
            events=count,
            head=f"sha256:{last_hash}" if last_seq else None,
            problems=tuple(text for _, text in problems),
            first_bad=problems[0][0] if problems else None,
            notes=tuple(notes),
        )

    def _check_head_file(
        self, file_head: tuple[int, str] | None, hashes: dict[int, str], last_seq: int, notes: list[str]
    ) -> list[tuple[int, str]]:
        name = self.head_path.name
        # A team vault's database is shared by many machines, each with its own head file: it
        # witnesses the chain as this machine last wrote it, and other machines append after it.
        # Such a file may be missing or far behind; it must still name an event of the chain.
        shared = self._shared_head
        if file_head is None and shared:
            if last_seq > 0:
                notes.append(f"this machine's head file {name} is not written yet (it has made no change here)")
            return []
        if file_head is None:
            return [(last_seq, f"the head file {name} is missing")] if last_seq > 0 else []
        seq, digest = file_head
        if seq < 0:
            return [(last_seq, f"the head file {name} is unreadable")]
        if seq > last_seq:
            return [
                (last_seq + 1, f"history truncated: the head file records event #{seq}, the log ends at #{last_seq}")
            ]
        if hashes.get(seq) != digest:
            return [(seq, f"event #{seq} differs from the one the head file recorded")]
        if shared and seq < last_seq:
            notes.append(f"this machine's head file is at event #{seq}; other machines appended up to #{last_seq}")
        elif seq == last_seq - 1:
            notes.append(f"the head file lags one event, at #{seq} (an interrupted write); the chain is intact")
        elif seq < last_seq:
            return [
                (
                    seq + 1,
                    f"the head file records event #{seq}, {last_seq - seq} events before the log's end (#{last_seq}); "
                    f"it lags at most one: events #{seq + 1}..#{last_seq} were written behind labvault's back, "
                    "or the head file was rewritten",
                )
            ]
        return []


def _check_anchor(
    anchor: tuple[int | None, str], hashes: dict[int, str], last_seq: int, notes: list[str]
) -> list[tuple[int, str]]:
    seq, digest = anchor
    shown = f"sha256:{digest[:12]}"
    if seq is None:
        found = [s for s, h in hashes.items() if h == digest and s > 0]
        if not found:
            return [(1, f"the anchored head {shown} is not an event of the chain: the history was rewritten")]
        seq = found[0]
    elif seq > last_seq:
        return [
            (last_seq + 1, f"history truncated: the anchored head records event #{seq}, the log ends at #{last_seq}")
        ]
    elif hashes.get(seq) != digest:
        return [(seq, f"event #{seq} differs from the anchored head {shown}: the history up to it was rewritten")]
    notes.append(f"events #1..#{seq} match the anchored head {shown}")
    return []


_ANCHOR_RE = re.compile(r"^(?:(\d+)[ :])?\s*(?:sha256:)?([0-9a-f]{64})$")


def parse_anchor(text: str) -> tuple[int | None, str]:
    """``SEQ sha256:HEX`` (the head file's line), ``SEQ:HEX``, ``sha256:HEX``, or a file holding one of
    them or the JSON document of ``audit verify --json`` -> ``(seq or None, hex)``."""
    value = text.strip()
    if not _ANCHOR_RE.match(value.lower()):
        path = Path(value)
        try:
            if path.is_file() and path.stat().st_size <= 1 << 20:
                value = path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
        if value.startswith("{"):
            value = _anchor_from_json(value)
    m = _ANCHOR_RE.match(value.lower())
    if m is None:
        raise ValidationError(
            f"{text!r} is not an audit head",
            hint="give `SEQ sha256:HEX` (the audit-head file's line), `sha256:HEX` "
            "(the head of `labvault audit verify --json`), or a file holding one of them",
        )
    return (int(m.group(1)) if m.group(1) else None), m.group(2)


def _anchor_from_json(text: str) -> str:
    try:
        doc = loads_json(text, name="audit head")
    except ValidationError:
        return text
    if not isinstance(doc, dict) or not isinstance(doc.get("head"), str):
        return text
    events = doc.get("events")
    return f"{events} {doc['head']}" if isinstance(events, int) and doc.get("ok") is True else doc["head"]


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
