"""``/api/v1/transfer``: a server as a remote of ``labvault push`` and ``pull`` (docs/remotes.md).

- ``POST /transfer/gather`` (reader): the records a pull of these REFs (or lock entries) would move,
  read and validated here as a local pull reads a remote.
- ``POST /transfer/decide`` (writer): where each pushed record would land (new, renamed, present),
  writing nothing; a conflict is 409 (exit 4), before any object is sent.
- ``POST /transfer/records`` (writer): write a batch of immutable records (snapshots, finished runs,
  model versions) in one transaction, with the rules of a local push: the same content is a no-op,
  different content under an existing number a conflict unless ``rename``. Every object they reach
  must be stored already (objects first, records last). A received model version appends a
  ``register`` event by the token's user; aliases and the audit chain never travel.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from labvault.client.remote_wire import MAX_RECORDS, decode_records, encode_records
from labvault.errors import Conflict, IntegrityError, ValidationError
from labvault.refs import DataRef, Digest, validate_name
from labvault.safeload import loads_json
from labvault.server.deps import Caller, caller
from labvault.services.remotes.records import Record
from labvault.services.remotes.side import Side
from labvault.services.snapshots.lockfile import LockEntry
from labvault.services.transfer import parse_full_digest

__all__ = ["router"]

router = APIRouter(prefix="/transfer", tags=["transfer"])
Reader = Annotated[Caller, Depends(caller("reader"))]
Writer = Annotated[Caller, Depends(caller("writer"))]
_WHERE = "the server"
_RANK = {"snapshot": 0, "run": 1, "version": 2}
#: The largest records batch read from an object (runs with long metric histories).
MAX_BATCH = 256 << 20


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Locked(_Body):
    name: str = Field(max_length=128)
    content_hash: str = Field(max_length=80)


class Gather(_Body):
    refs: list[Annotated[str, Field(max_length=600)]] = Field(default_factory=list, max_length=10_000)
    lock: list[Locked] = Field(default_factory=list, max_length=10_000)
    everything: bool = False
    no_data: bool = False


class Records(_Body):
    """The records inline, or (a batch over the JSON body limit) the digest of an uploaded object
    holding their JSON list."""

    records: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_RECORDS)
    batch: str | None = Field(default=None, max_length=80)
    rename: bool = False
    origin: str = Field(default="a client", max_length=2048)


def _side(who: Caller) -> Side:
    return who.vault._side(_WHERE)


def _landings(landings: list[Any]) -> dict[str, Any]:
    return {
        "landings": [
            {"ref": lg.record.ref, "kind": lg.record.kind, "action": lg.action, "as": lg.target} for lg in landings
        ]
    }


def _received(body: Records, who: Caller) -> list[Record]:
    where = f"the pushing client ({who.user})"
    if (body.records is None) == (body.batch is None):
        raise ValidationError("give the records inline or as a batch object, not both", hint="see /api/docs")
    raw: Any = body.records
    if body.batch is not None:
        digest = parse_full_digest(body.batch)
        if who.vault.objects.info(digest).size > MAX_BATCH:
            raise ValidationError(f"a records batch is at most {MAX_BATCH} bytes", hint="push fewer records at once")
        raw = loads_json(who.vault.objects.get_bytes(digest, verify=True).decode("utf-8", "replace"), name=where)
    try:
        records = decode_records(raw, where=where)
    except IntegrityError as exc:  # damaged on a server's disk; in a request, it is bad input (400)
        raise ValidationError(exc.message, hint=exc.hint) from None
    return sorted(records, key=lambda r: _RANK[r.kind])


@router.post("/gather", summary="The records a pull of these references would move, validated")
def gather_records(body: Gather, who: Reader) -> Any:
    from labvault.services.remotes.plan import gather

    lock = [
        LockEntry("", DataRef(validate_name(e.name, what="dataset name")), Digest(e.content_hash), "dir")
        for e in body.lock
    ]
    plan = gather(_side(who), body.refs, lock=lock, everything=body.everything, no_data=body.no_data)
    return {"records": encode_records(plan.ordered()), "warnings": plan.warnings}


@router.post("/decide", summary="Where pushed records would land (new, renamed, present); writes nothing")
def decide_records(body: Records, who: Writer) -> Any:
    from labvault.services.remotes.apply import decide

    side = _side(who)
    records = _received(body, who)
    with side.meta.read() as conn:
        return _landings(decide(conn, records, dst=side, rename=body.rename, by_content=False))


@router.post("/records", summary="Write pushed records in one transaction (their objects must be stored)")
def write_records(body: Records, who: Writer) -> Any:
    from labvault.services.remotes.apply import decide, write_records
    from labvault.services.remotes.copy import reachable

    side = _side(who)
    records = _received(body, who)
    with side.meta.read() as conn:
        landings = decide(conn, records, dst=side, rename=body.rename, by_content=False)
    to_write = [lg.record for lg in landings if lg.writes]
    # Objects first, records last: never record what points at an object this vault lacks. Trees are
    # read (and hashed) here; a missing one is reported as missing, like a missing file.
    # Each digest is looked up once: the roots first (a missing tree cannot be walked), then only
    # what the trees add.
    roots = [ref for record in to_write for ref in record.refs]
    absent = [d for d in dict.fromkeys(d for d, _ in roots) if not side.objects.has(d)]
    if not absent:
        checked = {d.hex for d, _ in roots}
        absent = [d for d in reachable(side.objects, roots, _WHERE) if d.hex not in checked and not side.objects.has(d)]
    if absent:  # the client's order is wrong, not the server's data: 409, never a server error
        raise Conflict(
            f"{len(absent)} object(s) these records need are not on the server, the first {absent[0]}",
            hint="send the objects first (POST /api/v1/objects/missing lists them), then the records",
        )
    if not to_write:
        return _landings(landings)
    written = write_records(side, to_write, rename=body.rename, by_content=False, origin=body.origin)
    by_ref = {lg.record.ref: lg for lg in written}
    return _landings([by_ref.get(lg.record.ref, lg) for lg in landings])
