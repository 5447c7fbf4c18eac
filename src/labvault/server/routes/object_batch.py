"""``/api/v1/objects/batch``: many small objects in one request, up or down (framing: client/frames.py).

- ``POST /objects/batch`` (writer): a framed body of up to 1,000 objects of up to 1 MiB each (16 MiB
  in all). The body is read as it arrives and every object is hashed against its header; a bad frame
  or a mismatch is 400 naming the digest, before anything is stored. Then all are stored in one
  ``batch()`` of the vault's object store (one pack commit): all of them, or none.
- ``POST /objects/batch/get`` (reader): ``{"digests": [...]}`` answered by the framed bytes of each, in
  order, streamed. An object over 1 MiB, or one that does not verify here, comes as a "fetch it alone"
  marker (``GET /objects/{digest}`` then serves it, or says why not); once 16 MiB are sent the answer
  ends, and the client asks again for the rest. An unknown digest is 404 before anything is sent.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from labvault.client.frames import MAGIC, MAX_BODY, MAX_COUNT, MAX_OBJECT, FrameParser, frame
from labvault.errors import CheckFailed, IntegrityError, LabvaultError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.server.bodies import body_blocks
from labvault.server.deps import Caller, caller
from labvault.services.transfer import parse_full_digest
from labvault.vault import Vault

__all__ = ["router"]

router = APIRouter(prefix="/objects", tags=["objects"])
Reader = Annotated[Caller, Depends(caller("reader"))]
Writer = Annotated[Caller, Depends(caller("writer"))]
_SPOOL_MEMORY = 4 << 20  # a batch's verified bytes are kept in memory up to this, then in a temp file
_BLOCK = 1 << 20  # an answer is sent in blocks of about this size


class BatchGet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    digests: list[Annotated[str, Field(max_length=80)]] = Field(min_length=1, max_length=MAX_COUNT)


def _bad(message: str) -> LabvaultError:
    return ValidationError(f"{message}; nothing was stored", hint="send the batch again (see docs/server.md)")


def _mismatch(hexd: str, got: str) -> LabvaultError:
    return ValidationError(
        f"object sha256:{hexd} in the batch hashes to sha256:{got}; nothing was stored",
        hint="send the batch again; it was corrupted on the way",
    )


def _too_large(what: str) -> JSONResponse:
    return JSONResponse(
        {"error": f"{what}; nothing was stored", "hint": f"send at most {MAX_BODY} bytes per batch", "code": 2},
        status_code=413,
    )


@router.post("/batch", summary="Upload many small objects in one framed body; all are stored, or none")
async def put_batch(request: Request, who: Writer) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        return _too_large(f"the batch is {length} bytes, over {MAX_BODY}")
    parser = FrameParser(bad=_bad, mismatch=_mismatch)
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115 - closed below
    entries: list[tuple[str, int, int]] = []  # (hex, offset, size) of verified objects in the spool
    received = 0
    try:
        async for block in body_blocks(request):
            received += len(block)
            if received > MAX_BODY:
                return _too_large(f"the batch is over {MAX_BODY} bytes")
            for hexd, data in parser.feed(block):
                if data is None or len(entries) >= MAX_COUNT:
                    raise _bad(f"a batch holds up to {MAX_COUNT} objects")
                entries.append((hexd, spool.tell(), len(data)))
                spool.write(data)
        parser.close()
        await run_in_threadpool(_store_all, who.vault, spool, entries)
    finally:
        spool.close()
    return JSONResponse({"stored": len(entries)}, status_code=201)


def _store_all(vault: Vault, spool: IO[bytes], entries: list[tuple[str, int, int]]) -> None:
    """Every verified object in one batch of the store: a failure leaves none of them visible."""
    with vault.objects.batch():
        for hexd, offset, size in entries:
            spool.seek(offset)
            stored = vault.objects.put_bytes(spool.read(size))
            if stored.hex != hexd:  # the spool gave back other bytes than were hashed: never store a wrong name
                raise CheckFailed(f"the object store hashed sha256:{hexd} as {stored}", hint="send the batch again")


@router.post("/batch/get", summary="Download many objects' bytes in one framed, streamed answer")
def get_batch(body: BatchGet, who: Reader) -> StreamingResponse:
    parsed = [parse_full_digest(d) for d in body.digests]
    sizes = [who.vault.objects.info(d).size for d in parsed]  # an unknown digest is 404 before anything is sent
    return StreamingResponse(_frames(who.vault, parsed, sizes), media_type="application/octet-stream")


def _frames(vault: Vault, digests: list[Digest], sizes: list[int]) -> Iterator[bytes]:
    """The answer in blocks of about 1 MiB (each block is a hop to a worker thread, not each object)."""
    block = bytearray(MAGIC)
    sent = 0
    for digest, size in zip(digests, sizes, strict=True):
        if sent and sent + size > MAX_BODY:
            break  # the client asks again for the rest
        data: bytes | None = None
        if size <= MAX_OBJECT:
            try:
                data = vault.objects.get_bytes(digest, verify=True)
            except (IntegrityError, NotFound):  # corrupt (quarantined) or gone since: GET /objects/{digest} says
                data = None
        sent += len(data or b"")
        block += frame(digest.hex, data)
        if len(block) >= _BLOCK:
            yield bytes(block)
            block.clear()
    if block:
        yield bytes(block)
