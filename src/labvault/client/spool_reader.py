"""The sending side of a tracking spool (:mod:`labvault.client.spool` has its format): a spool's
header, its ``.state`` (how far the server has acknowledged, which range is being sent), and the
batches still to send, read back from disk and validated (a spool is untrusted input).

Used by the tracking process's sender thread on its own spool, and by whoever sends a spool a
process left behind, after taking the writer's ``flock`` (:meth:`SpoolReader.claim`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvault.client.spool import FORMAT, MAGIC, SPOOL_NAME, spool_files
from labvault.errors import IntegrityError

__all__ = ["MAX_BATCH", "Batch", "SpoolReader", "iter_readers"]

MAX_BATCH = 10_000  # metric points per request: the server's limit
_MAX_READ = 8 * 1024 * 1024  # bytes read for one batch


@dataclass
class Batch:
    """Records ``[start, end)`` of a spool: one ``POST /runs/{id}/log``, or the run's end."""

    start: int
    end: int
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[bytes] = field(default_factory=list)  # the points' JSON objects, as spooled
    ending: tuple[str, int | None, str | None] | None = None

    def body(self) -> bytes:
        """The ``POST /runs/{id}/log`` body; the points are copied unparsed (the server validates them)."""
        head = json.dumps({"params": self.params, "tags": self.tags}, separators=(",", ":"))
        return b"".join([head[:-1].encode("utf-8"), b',"metrics":[', b",".join(self.metrics), b"]}"])


class SpoolReader:
    """The sending side of one spool file: its header, its state, and the batches still to send.

    Used by the tracking process's sender thread on its own spool, and by whoever sends a spool a
    process left behind (after taking its lock with :meth:`claim`).
    """

    def __init__(self, path: Path) -> None:
        match = SPOOL_NAME.match(path.name)
        if match is None:
            raise IntegrityError(f"{path} is not a spool file", hint="remove it")
        self.path = path
        self.state_path = path.with_name(path.name[: -len(".spool")] + ".state")
        self.run_id, self.nonce = match.group(1), match.group(2)
        self._fd = -1
        self.header_end = 0
        self.url = ""
        self.owned = False
        state = self._read_state()
        self.acked: int = state.get("acked", 0)
        self.sending: tuple[int, int] | None = state.get("sending")

    # -- the lock, for a spool left by another process --------------------------------------------
    def claim(self) -> bool:
        """Take the spool's lock without waiting: False while its writer (or another sender) lives."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:  # sent and removed by the process that held the lock a moment ago
            os.close(fd)
            return False
        self._fd = fd
        state = self._read_state()  # now that nobody else sends it
        self.acked = state.get("acked", 0)
        self.sending = state.get("sending")
        return True

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- state ----------------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise IntegrityError(f"unreadable spool state {self.state_path}: {err}", hint="remove it") from None
        out: dict[str, Any] = {}
        if isinstance(data, dict):
            acked = data.get("acked")
            if isinstance(acked, int) and not isinstance(acked, bool) and acked >= 0:
                out["acked"] = acked
            sending = data.get("sending")
            if (
                isinstance(sending, list)
                and len(sending) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in sending)
            ):
                out["sending"] = (sending[0], sending[1])
        return out

    def _write_state(self) -> None:
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, json.dumps({"acked": self.acked, "sending": self.sending}).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_path)
        _fsync_dir(self.path.parent)

    def mark_sending(self, batch: Batch) -> None:
        """Record the range before it is sent: a resend after a crash sends exactly it again."""
        if self.sending != (batch.start, batch.end):
            # The bytes go to disk before the server may hold them (power loss: see client/spool.py).
            with open(self.path, "rb") as f:
                os.fsync(f.fileno())
            self.sending = (batch.start, batch.end)
            self._write_state()

    def mark_acked(self, batch: Batch) -> None:
        self.acked = batch.end
        self.sending = None
        self._write_state()

    def idempotency_key(self, batch: Batch) -> str:
        return f"spool-{self.nonce}-{batch.start}-{batch.end}"

    def remove(self) -> None:
        """Everything was acknowledged: the spool first, then its state (a state alone is harmless)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()

    # -- reading --------------------------------------------------------------------------------
    def _read_header(self, f: Any) -> bool:
        """False for a spool its process left before writing anything (all zeros, or empty)."""
        line = f.readline(4096)
        if not line.strip(b"\0"):
            return False
        if not line.endswith(b"\n"):
            raise IntegrityError(f"spool {self.path} has no complete header", hint="remove it")
        try:
            header = json.loads(line)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get(MAGIC) != FORMAT or header.get("run") != self.run_id:
            raise IntegrityError(f"spool {self.path} has an unknown header", hint="remove it")
        self.url = str(header.get("url", ""))
        self.owned = header.get("owned") is True
        self.header_end = len(line)
        return True

    def next_batch(self) -> Batch | None:
        """The next range to send: the one recorded as being sent, else up to MAX_BATCH points
        from the acknowledged offset (params and tags ride along; an end is a batch of its own).
        None when every complete record is acknowledged."""
        with open(self.path, "rb") as f:
            if not self.header_end and not self._read_header(f):
                return None  # nothing was ever logged to it
            start = max(self.acked, self.header_end)
            limit = _MAX_READ
            if self.sending is not None and self.sending[0] == start:
                limit = self.sending[1] - start
            f.seek(start)
            data = f.read(limit)
        zero = data.find(b"\0")
        if zero >= 0:  # the mapped room past the records (or a record a crash cut short)
            data = data[:zero]
        if self.sending is not None and self.sending[0] == start:
            if len(data) != self.sending[1] - start:
                raise IntegrityError(f"spool {self.path} is shorter than its state says", hint="remove it")
            return self._parse(start, data, exact=True)
        cut = data.rfind(b"\n")
        if cut < 0:
            return None
        return self._parse(start, data[: cut + 1], exact=False)

    def _parse(self, start: int, data: bytes, *, exact: bool) -> Batch | None:
        batch = Batch(start, start)
        metrics = batch.metrics
        pos = 0
        for line in data.split(b"\n")[:-1]:  # data ends with a newline
            if line[:8] == b'{"key":"' and line[-1:] == b"}":
                if len(metrics) >= MAX_BATCH and not exact:
                    break
                metrics.append(line)
                pos += len(line) + 1
                continue
            record = _decode(line, self.path)
            kind = record[0]
            if kind == "e":
                if pos == 0:  # an end is sent alone, after everything before it
                    batch.ending = (record[1], record[2], record[3])
                    pos += len(line) + 1
                break
            if kind == "p":
                batch.params.update(record[1])
            else:
                batch.tags.update(record[1])
            pos += len(line) + 1
        if exact and pos != len(data):
            raise IntegrityError(f"spool {self.path} does not match its state", hint="remove it")
        batch.end = start + pos
        return batch if pos else None


def _decode(line: bytes, path: Path) -> list[Any]:
    """A params, tags or end record, validated: a spool is read back from disk, so it is untrusted."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    ok = isinstance(record, list) and bool(record)
    if ok:
        kind = record[0]
        if kind in ("p", "t"):
            ok = len(record) == 2 and isinstance(record[1], dict)
            if ok and kind == "t":
                ok = all(isinstance(v, str) for v in record[1].values())
        elif kind == "e":
            ok = (
                len(record) == 4
                and record[1] in ("finished", "failed", "killed")
                and (record[2] is None or (isinstance(record[2], int) and not isinstance(record[2], bool)))
                and (record[3] is None or isinstance(record[3], str))
            )
        else:
            ok = False
    if not ok:
        raise IntegrityError(f"spool {path} holds a record it cannot read: {line[:80]!r}", hint="remove it")
    return list(record)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_readers(folder: Path) -> Iterator[SpoolReader]:
    for path in spool_files(folder):
        yield SpoolReader(path)
