"""Sending spools to the server: one pass over a spool (:func:`send_spool`, also what ``labvault
sync`` runs), the spools dead processes left (:func:`send_orphans`), and the background thread of a
run being tracked (:class:`Sender`), which sends at least every :data:`SEND_EVERY` second.

A transient failure (server away or busy, a token that may be fixed, a key whose first request is
still being stored) is retried with backoff; any other stops the sending and is reported.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvault.client.spool import SpoolWriter, spool_files
from labvault.client.spool_reader import Batch, SpoolReader
from labvault.client.transport import Transport
from labvault.errors import Conflict, ExternalError, IntegrityError, LabvaultError, LockedError, NotAllowed

__all__ = ["SEND_EVERY", "SendReport", "Sender", "send_orphans", "send_spool"]

SEND_EVERY = 1.0  # seconds between the sender's passes (sooner on flush and end)
_MAX_DELAY = 5.0
_STILL_RUNNING = "still running"  # the server's 409 for a key whose first request is being stored


# -- sending one spool --------------------------------------------------------------------------
@dataclass
class SendReport:
    """What one pass over a spool sent (``labvault sync --json`` prints these)."""

    run_id: str
    path: str
    batches: int = 0
    metrics: int = 0
    params: int = 0
    tags: int = 0
    ended: str | None = None
    done: bool = False
    live: bool = False  # held by a process that is still tracking the run: it sends it itself
    error: LabvaultError | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "ref": f"run:{self.run_id}",
            "spool": self.path,
            "status": "sent" if self.done else "live" if self.live else "failed" if self.error else "pending",
            "batches": self.batches,
            "metrics": self.metrics,
            "params": self.params,
            "tags": self.tags,
            "ended": self.ended,
            "error": str(self.error) if self.error is not None else None,
        }


def _transient(err: LabvaultError) -> bool:
    """Worth retrying: the server away or busy, a token that may be fixed, a key still being stored."""
    if isinstance(err, Conflict):
        return _STILL_RUNNING in str(err)
    return isinstance(err, ExternalError | LockedError | IntegrityError | NotAllowed)


def _send_batch(transport: Transport, reader: SpoolReader, batch: Batch) -> None:
    reader.mark_sending(batch)
    if batch.ending is not None:
        status, exit_code, error = batch.ending
        # A Conflict is an end the server already holds: the resend of one answered before a crash.
        with contextlib.suppress(Conflict):
            transport.request(
                "POST", f"/runs/{reader.run_id}/end", json={"status": status, "exit_code": exit_code, "error": error}
            )
    else:
        try:
            transport.request(
                "POST",
                f"/runs/{reader.run_id}/log",
                content=batch.body(),
                headers={"Content-Type": "application/json"},
                idempotency_key=reader.idempotency_key(batch),
            )
        except Conflict as err:
            if _STILL_RUNNING not in str(err) or not _stored_already(transport, reader.run_id, batch):
                raise
    reader.mark_acked(batch)


def _stored_already(transport: Transport, run_id: str, batch: Batch) -> bool:
    """Whether the server holds this batch's points though its key is still claimed (a server
    killed after storing the batch, before recording the answer, keeps the claim two minutes and
    then lets a retry store it again). The points go in one transaction after the params and tags,
    so the last point being there means the whole batch is."""
    if not batch.metrics:
        return False  # params and tags are stored again harmlessly: wait for the claim
    last = json.loads(batch.metrics[-1])
    if not isinstance(last, dict) or not isinstance(last.get("key"), str):
        return False
    found = transport.request("GET", f"/runs/{run_id}/history", params={"key": last["key"]})
    points = found.get(last["key"], []) if isinstance(found, dict) else []
    return any(
        isinstance(p, dict) and p.get("step") == last.get("step") and p.get("value") == last.get("value")
        for p in points
    )


def send_spool(
    reader: SpoolReader,
    transport: Transport,
    *,
    retry_until: float,
    stop: threading.Event | None = None,
    end_orphan: bool = False,
) -> SendReport:
    """Send every complete record of ``reader``'s spool; retry transient failures until the
    monotonic time ``retry_until``. With ``end_orphan``, a spool whose owned run never recorded its
    end (its process died) ends the run as killed once it is sent. Removes the spool when done."""
    report = SendReport(reader.run_id, str(reader.path))
    delay = 0.2
    while True:
        try:
            batch = reader.next_batch()
            if batch is None:
                break
            _send_batch(transport, reader, batch)
        except LabvaultError as err:
            if not _transient(err) or time.monotonic() + delay > retry_until or (stop is not None and stop.is_set()):
                report.error = err
                return report
            time.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, _MAX_DELAY)
            continue
        delay = 0.2
        report.batches += 1
        report.metrics += len(batch.metrics)
        report.params += len(batch.params)
        report.tags += len(batch.tags)
        if batch.ending is not None:
            report.ended = batch.ending[0]
    if end_orphan and report.ended is None and reader.owned:
        try:
            transport.request(
                "POST",
                f"/runs/{reader.run_id}/end",
                json={"status": "killed", "error": "its process stopped without ending it; sent by labvault sync"},
            )
            report.ended = "killed"
        except Conflict:
            pass  # ended meanwhile (resumed and finished elsewhere)
        except LabvaultError as err:
            report.error = err
            return report
    reader.remove()
    report.done = True
    return report


def send_orphans(folder: Path, transport: Transport, *, retry_for: float, skip: Path | None = None) -> list[SendReport]:
    """Send the spools in ``folder`` that no live process holds (their writers died)."""
    reports = []
    for path in spool_files(folder):
        if skip is not None and path == skip:
            continue
        try:
            reader = SpoolReader(path)
            if not reader.claim():
                if path.exists():
                    reports.append(SendReport(reader.run_id, str(path), live=True))
                continue
        except LabvaultError as err:
            reports.append(SendReport(path.name.split("-")[0], str(path), error=err))
            continue
        try:
            reports.append(send_spool(reader, transport, retry_until=time.monotonic() + retry_for, end_orphan=True))
        except LabvaultError as err:
            reports.append(SendReport(reader.run_id, str(path), error=err))
        finally:
            reader.release()
    for state in folder.glob("*.state") if folder.is_dir() else ():
        if not state.with_name(state.name[: -len(".state")] + ".spool").exists():
            state.unlink(missing_ok=True)  # its spool was sent and removed; a crash kept the state
    return reports


# -- the background sender of one run ----------------------------------------------------------
class Sender(threading.Thread):
    def __init__(self, writer: SpoolWriter, transport: Transport, folder: Path) -> None:
        super().__init__(name=f"labvault-sender-{writer.run_id}", daemon=True)
        self.writer = writer
        self.reader = SpoolReader(writer.path)
        self.transport = transport
        self.folder = folder
        self._wake = threading.Event()
        self._stop_event = threading.Event()
        self._done = threading.Condition()
        self.position = 0  # bytes of the spool the server holds (the header counts as held)
        self.failure: LabvaultError | None = None  # a batch the server refuses for good
        self.last_error: LabvaultError | None = None  # the latest transient failure, for messages

    def run(self) -> None:
        delay = SEND_EVERY
        backoff = 0.1
        orphans_sent = False
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            try:
                self._pass()
                self.last_error = None
                delay, backoff = SEND_EVERY, 0.1
            except LabvaultError as err:
                if not _transient(err):
                    with self._done:
                        self.failure = err
                        self._done.notify_all()
                    return
                self.last_error = err
                backoff = min(backoff * 2, _MAX_DELAY)
                delay = backoff * (0.5 + random.random() / 2)
                if self._stop_event.is_set():
                    return
                continue
            if self._stop_event.is_set():
                return
            if not orphans_sent:
                orphans_sent = True
                # Best effort: `labvault sync` sends them too, and says why when it cannot.
                with contextlib.suppress(LabvaultError, OSError):
                    send_orphans(self.folder, self.transport, retry_for=0.0, skip=self.writer.path)

    def _pass(self) -> None:
        while True:
            batch = self.reader.next_batch()
            if batch is None:
                with self._done:
                    self.position = max(self.reader.acked, self.reader.header_end)
                    self._done.notify_all()
                return
            _send_batch(self.transport, self.reader, batch)
            with self._done:
                self.position = self.reader.acked
                self._done.notify_all()

    def flush(self, timeout: float | None) -> bool:
        """Wait until the server holds everything written so far; False on timeout."""
        target = self.writer.written
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake.set()
        with self._done:
            while self.position < target:
                if self.failure is not None:
                    raise self.failure
                if not self.is_alive():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._done.wait(0.5 if left is None else min(left, 0.5))
        return True

    def stop(self) -> None:
        self._stop_event.set()
        self._wake.set()
        self.join(timeout=30)
