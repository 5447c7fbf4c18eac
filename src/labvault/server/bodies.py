"""A large request body handed to a worker thread as it arrives, in blocks of a few MiB.

The event loop gathers the body while the thread hashes and writes the block before: receiving,
hashing and writing overlap, and the thread hops are one per block, not one per socket read.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from labvault.errors import ValidationError

__all__ = ["UPLOAD_THREADS", "body_blocks", "consume_body"]

T = TypeVar("T")
_BLOCK = 4 << 20
_QUEUED = 2  # blocks held for the thread at most: the memory one upload can take
#: Uploads stored at once per process. They have threads of their own: a few slow clients holding
#: upload threads must not take the threads every other request runs in (app.REQUEST_THREADS).
UPLOAD_THREADS = 4
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


async def body_blocks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client gone before its end is bad input, not a server error."""
    try:
        async for block in request.stream():
            yield block
    except ClientDisconnect:
        raise ValidationError(
            "the client went away before the whole body arrived; nothing was stored", hint="send it again"
        ) from None


def _upload_limiter() -> anyio.CapacityLimiter:
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(UPLOAD_THREADS)
    return limiter


async def consume_body(request: Request, consume: Callable[[Callable[[], bytes]], T], *, limit: int) -> T:
    """Run ``consume(read)`` in a worker thread; ``read()`` returns the body's next block, ``b""`` at
    its end. A body over ``limit`` bytes is refused (413) and ``read()`` raises in the thread, so that
    nothing half-received is kept."""
    # The blocks go over as they came from the socket, a few MiB of them per hop, never joined: joining
    # would copy every byte once more on the event loop's core.
    send, receive = anyio.create_memory_object_stream[list[bytes]](max_buffer_size=_QUEUED)
    failed: list[BaseException] = []

    async def feed() -> None:
        async with send:
            parts: list[bytes] = []
            held = total = 0
            try:
                async for block in body_blocks(request):
                    total += len(block)
                    if total > limit:
                        raise HTTPException(413, f"the object body is over {limit} bytes")
                    parts.append(block)
                    held += len(block)
                    if held >= _BLOCK:
                        await send.send(parts)
                        parts, held = [], 0
                if parts:
                    await send.send(parts)
            except Exception as exc:  # the client went away (400), or sent too much (413): handed to the thread
                failed.append(exc)
                if parts:  # what did arrive (within the limit) first: a piece of an upload session keeps it
                    await send.send(parts)

    pending: collections.deque[bytes] = collections.deque()

    def read() -> bytes:
        while not pending:
            try:
                pending.extend(anyio.from_thread.run(receive.receive))
            except anyio.EndOfStream:
                if failed:
                    raise failed[0] from None
                return b""
        return pending.popleft()

    outcome: list[T] = []
    error: list[BaseException] = []

    async def work() -> None:
        try:
            outcome.append(await anyio.to_thread.run_sync(consume, read, limiter=_upload_limiter()))
        except Exception as exc:  # raised below, outside the task group (which would wrap it)
            error.append(exc)
        finally:
            tasks.cancel_scope.cancel()  # a thread that failed early leaves the feeder waiting

    async with receive, anyio.create_task_group() as tasks:
        tasks.start_soon(feed)
        tasks.start_soon(work)
    if error:
        raise error[0]
    return outcome[0]
