"""Group commit for the team server's single-point log requests: one writer thread per process.

Fifty clients each sending a point per request used to cost a transaction and two hops between the
event loop and a worker thread per point. The writer thread takes every request waiting, appends
their points in one transaction (each behind its own token and run-state gate, read in that
transaction) and commits once; a request is answered after the commit that holds its points, so an
answer still means the point is durable. A database error fails every request of that commit, and
stores none of them.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from labvault.services.tracking.batches import GatedPoints

if TYPE_CHECKING:
    from labvault.services.tracking.records import RunRecords

__all__ = ["PointQueue"]

#: Requests one transaction takes at most: it bounds how long the database's write lock is held.
MOST_PER_COMMIT = 256


class PointQueue:
    """``submit`` gated points; the future answers after the commit that holds them."""

    def __init__(self, records: RunRecords) -> None:
        self._records = records
        self._jobs: queue.SimpleQueue[tuple[GatedPoints, Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, gated: GatedPoints) -> Future[Any]:
        done: Future[Any] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="labvault-points", daemon=True)
                self._thread.start()
        self._jobs.put((gated, done))
        return done

    def close(self) -> None:
        """Let the writer thread finish what was submitted, then stop it and release its connection."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()

    def _run(self) -> None:
        appender = self._records._appender()  # this thread's own connection
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                batch = [job]
                while len(batch) < MOST_PER_COMMIT:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        self._jobs.put(None)  # seen after this batch is committed
                        break
                    batch.append(job)
                # A request whose client went away (its future cancelled) is not written.
                _commit(appender.append_all, [(g, done) for g, done in batch if done.set_running_or_notify_cancel()])
        finally:
            self._records.close()


def _commit(append_all: Any, batch: list[tuple[GatedPoints, Future[Any]]]) -> None:
    if not batch:
        return
    try:
        refusals = append_all([(gated.rows, gated.gate) for gated, _ in batch])
    except Exception as err:  # a database error: nothing of the batch was stored
        for _, done in batch:
            done.set_exception(err)
        return
    for (gated, done), refused in zip(batch, refusals, strict=True):
        if refused is None:
            done.set_result(gated.answer)
        else:
            done.set_exception(refused)
