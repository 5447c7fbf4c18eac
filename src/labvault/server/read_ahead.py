"""A response body read ahead: the blocks of a download read (and verified) in a thread of their own.

Starlette reads a sync iterator one block at a time, in a worker thread, and reads the next only once
the event loop has sent the one before: the disk, the hashing and the socket took turns. Here a
thread reads up to :data:`AHEAD` blocks ahead, so the next block is read and hashed while this one is
sent. A download abandoned by its client stops the thread (closing the iterator, and its file) within
:data:`_WAIT` seconds.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

__all__ = ["AHEAD", "read_ahead"]

AHEAD = 2  # blocks read ahead at most: the memory one download holds beyond the block being sent
_WAIT = 1.0  # seconds between checks that the consumer is still there
_ABANDONED = 120.0  # a consumer that takes nothing for this long is gone (its response was dropped)


def read_ahead(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """``blocks``, read ahead in a thread; an error raised while reading is raised here, in order."""
    ready: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=AHEAD)  # None: the end
    stop = threading.Event()

    def produce() -> None:
        try:
            for block in blocks:
                if not _put(ready, block, stop):
                    return
            _put(ready, None, stop)
        except BaseException as exc:  # handed to the consumer, which raises it
            _put(ready, exc, stop)
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="labvault-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _put(
    ready: queue.Queue[bytes | BaseException | None], item: bytes | BaseException | None, stop: threading.Event
) -> bool:
    """Hand ``item`` over; False once the consumer has stopped or left it untaken too long."""
    waited = 0.0
    while not stop.is_set():
        try:
            ready.put(item, timeout=_WAIT)
            return True
        except queue.Full:
            waited += _WAIT
            if waited >= _ABANDONED:
                return False
    return False
