"""``/api/v1/objects``: upload by digest (whole, or chunked and resumable), download with ranges.

Objects are named by their full sha256 only (``/objects/resolve/{prefix}`` names the one object a
unique prefix of 8+ hex digits matches); no parameter is ever a path. An upload is hashed as it
arrives and refused when it does not match the digest it names.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from labvault.client.transport import VERIFIED_BY_CLIENT, VERIFY_HEADER
from labvault.errors import NotFound, ValidationError
from labvault.server.bodies import consume_body
from labvault.server.deps import Caller, caller
from labvault.server.read_ahead import read_ahead
from labvault.services.object_streams import compose_chunks, read_object, store_upload
from labvault.services.transfer import MAX_CHUNKS, missing_objects, parse_full_digest, read_range

__all__ = ["MAX_OBJECT_BODY", "router", "too_large"]

router = APIRouter(prefix="/objects", tags=["objects"])
Reader = Annotated[Caller, Depends(caller("reader"))]
Writer = Annotated[Caller, Depends(caller("writer"))]
#: The most one PUT may carry; larger objects go up in pieces of an upload session (routes/uploads.py).
MAX_OBJECT_BODY = 1 << 30
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Digests(_Body):
    digests: list[str] = Field(max_length=MAX_CHUNKS)


class Compose(_Body):
    chunks: list[str] = Field(min_length=1, max_length=MAX_CHUNKS)


def too_large(size: int) -> JSONResponse:
    return JSONResponse(
        {
            "error": f"the object body is over {MAX_OBJECT_BODY} bytes",
            "hint": "send it in pieces of an upload session (POST /api/v1/objects/{digest}/uploads)",
            "code": 2,
        },
        status_code=413,
    )


@router.put("/{digest}", status_code=201, summary="Upload an object; refused unless its bytes hash to {digest}")
async def put_object(digest: str, request: Request, who: Writer) -> Any:
    claimed = parse_full_digest(digest)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_OBJECT_BODY:
        return too_large(int(length))
    objects = who.vault.objects
    stored, created, size = await consume_body(
        request, lambda read: store_upload(objects, claimed, read), limit=MAX_OBJECT_BODY
    )
    return JSONResponse({"digest": str(stored), "size": size, "created": created}, status_code=201 if created else 200)


@router.post("/missing", summary="Which of these objects are not stored (resume an upload, remote status)")
def find_missing(body: Digests, who: Reader) -> Any:  # a reader may HEAD each of them anyway
    return {"missing": missing_objects(who.vault.objects, body.digests)}


@router.post("/{digest}/compose", status_code=201, summary="Store the concatenation of uploaded chunks as {digest}")
def compose(digest: str, body: Compose, who: Writer) -> Any:
    stored, created, size = compose_chunks(who.vault.objects, parse_full_digest(digest), body.chunks)
    return JSONResponse({"digest": str(stored), "size": size, "created": created}, status_code=201 if created else 200)


@router.get("/resolve/{prefix}", summary="The full digest of the one object a prefix (8+ hex digits) matches")
def resolve_prefix(prefix: str, who: Reader) -> Any:
    objects = who.vault.objects
    digest = objects.resolve_prefix(prefix[:71])  # parses it: hex only, never a path
    if not objects.has(digest):  # a full digest is given back unchecked
        raise NotFound(f"no object {digest}", hint="check the digest")
    return {"digest": str(digest)}


@router.head("/{digest}", summary="Whether an object is stored, and its size")
def head_object(digest: str, who: Reader) -> Response:
    info = who.vault.objects.info(parse_full_digest(digest))
    return Response(headers={"Content-Length": str(info.size), "Accept-Ranges": "bytes"})


@router.get("/{digest}", summary="Download an object (whole, or a byte range with Range: bytes=A-B)")
def get_object(
    digest: str,
    who: Reader,
    range: Annotated[str | None, Header(max_length=100)] = None,
    x_labvault_verify: Annotated[
        str | None,
        Header(
            alias=VERIFY_HEADER,
            max_length=20,
            description="`client`: the client hashes what it receives against the digest itself, so the "
            "server does not hash it too (half the CPU a download costs the server). Without it a whole "
            "object is verified as it is sent: a corrupt one is quarantined and the download breaks off.",
        ),
    ] = None,
) -> Response:
    parsed = parse_full_digest(digest)
    objects = who.vault.objects
    size = objects.info(parsed).size
    verify = x_labvault_verify != VERIFIED_BY_CLIENT
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{parsed.hex}"'}
    if range is None or size == 0:
        headers["Content-Length"] = str(size)
        return StreamingResponse(
            read_ahead(read_object(objects, parsed, verify=verify)),
            media_type="application/octet-stream",
            headers=headers,
        )
    start, end = _parse_range(range, size)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    return StreamingResponse(
        read_ahead(read_range(objects, parsed, start, end, verify=verify)),
        status_code=206,
        media_type="application/octet-stream",
        headers=headers,
    )


def _parse_range(text: str, size: int) -> tuple[int, int]:
    match = _RANGE.fullmatch(text.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise ValidationError(f"unsupported Range {text[:100]!r}", hint="send one range: bytes=START-END")
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        end = min(size - 1, int(last)) if last else size - 1
    if start > end or start >= size:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ValidationError:
    return ValidationError(f"the range is outside the object (0-{size - 1})", hint="ask for bytes inside the object")
