"""``/api/v1/objects/.../uploads``: a large object sent in pieces into one upload session (writer).

- ``POST /objects/{digest}/uploads`` ``{"size": N}``: open a session; ``{"upload": id, "digest", "size",
  "received": []}``. A store with no sessions (the team vault's object storage) answers
  ``{"upload": null}``: send chunks, then ``POST /objects/{digest}/compose``.
- ``PUT /objects/uploads/{id}?offset=N``: the body is written at byte N (at most 1 GiB per piece).
  What arrived before a client went away is kept. Answers what the session holds.
- ``GET /objects/uploads/{id}``: what it holds, ``received`` as ``[start, end)`` spans (to resume).
- ``POST /objects/uploads/{id}/commit``: verified against the digest, made durable, renamed into
  place; 201 (200 if it was stored already). Bytes that do not hash to it: 422, nothing stored.
- ``DELETE /objects/uploads/{id}``: abandon it (gc sweeps the abandoned ones too).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from labvault.server.bodies import consume_body
from labvault.server.deps import Caller, caller
from labvault.server.routes.objects import MAX_OBJECT_BODY, too_large
from labvault.services.transfer import parse_full_digest
from labvault.services.upload_sessions import (
    MAX_UPLOAD,
    abort_upload,
    begin_upload,
    commit_upload,
    session_json,
    upload_status,
    write_piece,
)

__all__ = ["router"]

router = APIRouter(prefix="/objects", tags=["objects"])
Writer = Annotated[Caller, Depends(caller("writer"))]


class Begin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(ge=0, le=MAX_UPLOAD)


@router.post("/{digest}/uploads", status_code=201, summary="Open an upload session for {digest} (size in bytes)")
def begin(digest: str, body: Begin, who: Writer) -> Any:
    session = begin_upload(who.vault.objects, parse_full_digest(digest), body.size)
    if session is None:
        return JSONResponse({"upload": None}, status_code=200)
    return session_json(session)


@router.get("/uploads/{upload_id}", summary="What an upload session holds (to resume it)")
def status(upload_id: str, who: Writer) -> Any:
    return session_json(upload_status(who.vault.objects, upload_id[:64]))


@router.put("/uploads/{upload_id}", summary="Write a piece of an upload at byte `offset`")
async def put_piece(upload_id: str, request: Request, who: Writer, offset: Annotated[int, Query(ge=0)] = 0) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_OBJECT_BODY:
        return too_large(int(length))
    objects = who.vault.objects
    session = await consume_body(
        request, lambda read: write_piece(objects, upload_id[:64], offset, read), limit=MAX_OBJECT_BODY
    )
    return session_json(session)


@router.post("/uploads/{upload_id}/commit", status_code=201, summary="Verify an upload and store it as its object")
def commit(upload_id: str, who: Writer) -> Any:
    stored, created, size = commit_upload(who.vault.objects, upload_id[:64])
    return JSONResponse({"digest": str(stored), "size": size, "created": created}, status_code=201 if created else 200)


@router.delete("/uploads/{upload_id}", status_code=204, summary="Abandon an upload session")
def abort(upload_id: str, who: Writer) -> Response:
    abort_upload(who.vault.objects, upload_id[:64])
    return Response(status_code=204)
