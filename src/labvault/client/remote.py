"""Push to and pull from a remote that is a labvault server (``labvault remote add team https://...``).

The order and the rules are those of a push between vaults (``services/remotes``), with the server's
API in place of the other vault's stores:

- **push**: the records are read and validated here (``plan.gather``); the server says where each
  would land (``POST /transfer/decide``: a conflict is exit 4 before anything is sent); the objects
  they reach go first, only those the server lacks (``POST /objects/missing``), each hashed here and
  again on arrival; the records go last, in one transaction on the server (``POST /transfer/records``).
- **pull**: the server reads and validates the records (``POST /transfer/gather``); they are
  decoded and validated again here (a server is untrusted too), the objects this vault lacks are
  downloaded and hashed on arrival, and the records are written in one transaction here.
- **status**: what each side lacks, as ``vault.remotes.status`` says it of a folder: the server's
  side is read with the pull's reads (``/transfer/gather``, ``/objects/missing``, tree downloads),
  so a reader token is enough and nothing is written on either side.
- **fetch** (``data checkout`` and ``get`` with a server as the default remote): a pull of the
  records this vault lacks, then the objects still missing under the records it has.

The token is ``LABVAULT_TOKEN``, else the one ``labvault login`` saved for that URL; it never goes
in ``config.json``. A push or pull killed at any point leaves both sides consistent (at worst orphan
objects), and a rerun sends only what is still missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from labvault.client.remote_objects import ServerSource, download_objects, missing_on_server, upload_objects
from labvault.client.remote_wire import decode_records, encode_records
from labvault.client.settings import ENV_URI, ServerTarget, server_target
from labvault.client.transport import Transport
from labvault.errors import IntegrityError, NotFound, ValidationError
from labvault.refs import Digest
from labvault.services.remotes import MAX_JOBS, Moved, RemoteSpec, TransferResult
from labvault.services.remotes.apply import Landing, decide, renamed_inputs, write_records
from labvault.services.remotes.copy import reachable
from labvault.services.remotes.fetch import Missing, Status, missing, status_of
from labvault.services.remotes.plan import gather
from labvault.services.remotes.records import Record
from labvault.services.snapshots.lockfile import LockEntry, read_lock

if TYPE_CHECKING:
    from labvault.vault import Vault

__all__ = ["fetch", "pull", "push", "remote_target", "status"]

Progress = Callable[[int, int, int], None]
#: How long a request that is safe to repeat is retried while the server is away, once it answered.
RETRY_FOR = 30.0
#: Records up to this much JSON go in the request body; more go up as an object first.
INLINE_RECORDS = 8 << 20


def remote_target(spec: RemoteSpec) -> ServerTarget:
    """The server a remote names, with ``LABVAULT_TOKEN`` or the token saved for that URL."""
    env = {k: v for k, v in os.environ.items() if k != "LABVAULT_DIR"}
    env[ENV_URI] = spec.url
    target = server_target(env)
    return target if target is not None else ServerTarget(spec.url, None)  # never None: LABVAULT_URI is set


def _where(spec: RemoteSpec) -> str:
    return f"remote {spec.name!r} ({spec.url})"


def _open(spec: RemoteSpec) -> Transport:
    transport = Transport(remote_target(spec))
    try:
        transport.check_version()  # an unreachable server is exit 7 at once, not after retries
    except BaseException:
        transport.close()
        raise
    transport.retry_for = RETRY_FOR
    return transport


def _batch(transport: Transport, wire: list[dict[str, Any]]) -> dict[str, Any]:
    """The records inline, or, over :data:`INLINE_RECORDS` bytes of JSON (the server refuses JSON
    bodies over 16 MiB), uploaded as an object and named by its digest (an orphan gc collects)."""
    text = json.dumps(wire, separators=(",", ":"), allow_nan=False).encode()
    if len(text) <= INLINE_RECORDS:
        return {"records": wire}
    digest = Digest(hashlib.sha256(text).hexdigest())
    if missing_on_server(transport, [digest]):
        transport.request(
            "PUT", f"/objects/{digest}", content=text, headers={"Content-Type": "application/octet-stream"}
        )
    return {"batch": str(digest)}


def _lock_entries(vault: Vault) -> list[LockEntry]:
    entries = list(read_lock(vault.root).values())
    if not entries:
        raise ValidationError(
            "labvault.lock names no datasets, and no REF was given",
            hint="give what to move: data:NAME@vN, run:ID, PROJECT/MODEL@VERSION, or --all",
        )
    return entries


def _check_jobs(jobs: int) -> None:
    if not 1 <= jobs <= MAX_JOBS:
        raise ValidationError(f"--jobs {jobs} is out of range", hint=f"give 1 to {MAX_JOBS}")


def _landings(answer: Any, records: list[Record], where: str) -> list[Landing]:
    """The server's answer to decide/records, checked against what was sent."""
    listed = answer.get("landings") if isinstance(answer, dict) else None
    if not isinstance(listed, list) or len(listed) != len(records):
        raise IntegrityError(f"{where} answered the records with a malformed list", hint="check the server's log")
    out = []
    for record, item in zip(records, listed, strict=True):
        ok = (
            isinstance(item, dict)
            and item.get("ref") == record.ref
            and item.get("action") in ("new", "renamed", "present")
            and isinstance(item.get("as"), str)
            and len(item["as"]) <= 1024
        )
        if not ok:
            raise IntegrityError(f"{where} answered {record.ref} with a malformed landing", hint="check its log")
        out.append(Landing(record, item["action"], item["as"]))
    return out


def _result(
    direction: str,
    spec: RemoteSpec,
    landings: list[Landing],
    warnings: Sequence[str],
    *,
    sent: int,
    size: int,
    present: int,
    dry_run: bool,
) -> TransferResult:
    return TransferResult(
        direction=direction,
        remote=spec.name,
        url=spec.url,
        records=tuple(Moved(lg.record.ref, lg.record.kind, lg.action, lg.target) for lg in landings),
        objects_sent=sent,
        bytes_sent=size,
        objects_present=present,
        dry_run=dry_run,
        warnings=(*warnings, *renamed_inputs(landings)),
    )


def push(
    vault: Vault,
    spec: RemoteSpec,
    refs: Sequence[str] = (),
    *,
    everything: bool = False,
    jobs: int = 4,
    no_data: bool = False,
    rename: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> TransferResult:
    """Send records (the lock's snapshots when ``refs`` is empty) and the objects they need to a server."""
    _check_jobs(jobs)
    src = vault._side("this vault")
    lock = [] if refs or everything else _lock_entries(vault)
    plan = gather(src, refs, lock=lock, everything=everything, no_data=no_data)
    records = plan.ordered()
    where = _where(spec)
    with _open(spec) as transport:
        slim = encode_records(records, history=False)
        answer = transport.request("POST", "/transfer/decide", json={"records": slim, "rename": rename})
        landings = _landings(answer, records, where)
        to_write = [lg.record for lg in landings if lg.writes]
        roots = [ref for record in to_write for ref in record.refs]
        wanted = reachable(src.objects, roots, src.where) if roots else []
        lacking = missing_on_server(transport, wanted) if wanted else []
        present = len(wanted) - len(lacking)
        if dry_run:
            return _result(
                "push", spec, landings, plan.warnings, sent=len(lacking), size=0, present=present, dry_run=True
            )
        stats = upload_objects(
            transport, src.objects, lacking, where=src.where, jobs=jobs, progress=progress, already=present
        )
        if to_write:
            body = {**_batch(transport, encode_records(to_write)), "rename": rename, "origin": str(vault.root)}
            # Safe to repeat (the same content is a no-op), so a lost answer is retried.
            answer = transport.request("POST", "/transfer/records", json=body, idempotency_key=uuid.uuid4().hex)
            by_ref = {lg.record.ref: lg for lg in _landings(answer, to_write, where)}
            landings = [by_ref.get(lg.record.ref, lg) for lg in landings]
    return _result(
        "push", spec, landings, plan.warnings, sent=stats.objects, size=stats.bytes, present=present, dry_run=False
    )


def pull(
    vault: Vault,
    spec: RemoteSpec,
    refs: Sequence[str] = (),
    *,
    jobs: int = 4,
    no_data: bool = False,
    rename: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> TransferResult:
    """Fetch records (the lock's snapshots, found by content, when ``refs`` is empty) and their objects
    from a server; everything it sends is validated before anything is written here."""
    _check_jobs(jobs)
    here = vault._side("this vault")
    lock = [] if refs else _lock_entries(vault)
    where = _where(spec)
    with _open(spec) as transport:
        body = {
            "refs": list(refs),
            "lock": [{"name": e.ref.name, "content_hash": e.content_hash.hex} for e in lock],
            "no_data": no_data,
        }
        answer = transport.request("POST", "/transfer/gather", json=body, idempotency_key=uuid.uuid4().hex)
        if not isinstance(answer, dict):
            raise IntegrityError(f"{where} answered the pull with something malformed", hint="check the server's log")
        records = decode_records(answer.get("records"), where=where)
        warnings = answer.get("warnings")
        if not isinstance(warnings, list) or not all(isinstance(w, str) and len(w) < 2048 for w in warnings):
            raise IntegrityError(f"{where} sent malformed warnings", hint="check the server's log")
        with here.meta.read() as conn:
            landings = decide(conn, records, dst=here, rename=rename, by_content=True)
        to_write = [lg.record for lg in landings if lg.writes]
        roots = [ref for record in to_write for ref in record.refs]
        source = ServerSource(transport)
        wanted = reachable(source, roots, where) if roots else []  # type: ignore[arg-type]
        if dry_run:
            lacking = [d for d in wanted if not here.objects.has(d)]
            return _result(
                "pull",
                spec,
                landings,
                warnings,
                sent=len(lacking),
                size=0,
                present=len(wanted) - len(lacking),
                dry_run=True,
            )
        stats = download_objects(source, here.objects, wanted, where=where, jobs=jobs, progress=progress)
    if to_write:
        written = write_records(here, to_write, rename=rename, by_content=True, origin=f"{spec.name}:{spec.url}")
        by_ref = {lg.record.ref: lg for lg in written}
        landings = [by_ref.get(lg.record.ref, lg) for lg in landings]
    return _result(
        "pull", spec, landings, warnings, sent=stats.objects, size=stats.bytes, present=stats.present, dry_run=False
    )


class _Trees:
    """Trees for ``reachable``: this vault's copy when it has one that verifies (the same name is the
    same bytes), else the server's; ``reachable`` hashes whatever it is given."""

    def __init__(self, here: Any, server: ServerSource) -> None:
        self._here = here
        self._server = server

    def get_bytes(self, digest: Digest, *, verify: bool = False) -> bytes:
        try:
            data: bytes = self._here.get_bytes(digest, verify=False)
        except (NotFound, IntegrityError):
            return self._server.get_bytes(digest)
        return data if hashlib.sha256(data).hexdigest() == digest.hex else self._server.get_bytes(digest)


def _gathered(transport: Transport, refs: list[str], lock: list[LockEntry], where: str) -> list[Record]:
    body = {
        "refs": refs,
        "lock": [{"name": e.ref.name, "content_hash": e.content_hash.hex} for e in lock],
        "no_data": True,
    }
    answer = transport.request("POST", "/transfer/gather", json=body)
    if not isinstance(answer, dict):
        raise IntegrityError(f"{where} answered with something malformed", hint="check the server's log")
    return decode_records(answer.get("records"), where=where)


def _server_lacks(transport: Transport, here: Any, refs: Sequence[str], lock: list[LockEntry], where: str) -> Missing:
    """What the server lacks of ``refs`` and the lock entries (found by content), and of the objects
    its records reach: :func:`labvault.services.remotes.fetch.missing` with the server as the side."""
    out = Missing()
    try:  # one request when the server has them all, the common case
        records = _gathered(transport, list(refs), lock, where)
    except NotFound:
        records = []
        for entry in lock:
            try:
                records += _gathered(transport, [], [entry], where)
            except NotFound:
                out.lock.append(str(entry.ref))
        for ref in refs:
            try:
                records += _gathered(transport, [ref], [], where)
            except NotFound as exc:
                out.refs.append(ref)
                out.looked_up.append(exc)
    out.roots = [r for record in records for r in record.refs]
    if not out.roots:
        return out
    try:
        wanted = reachable(_Trees(here.objects, ServerSource(transport)), out.roots, where)  # type: ignore[arg-type]
    except IntegrityError:  # a tree is not there (or is damaged): what is below it is lacking too
        out.objects = 1 + len(missing_on_server(transport, [d for d, _ in out.roots]))
        return out
    out.objects = len(missing_on_server(transport, wanted))
    return out


def status(vault: Vault, spec: RemoteSpec, refs: Sequence[str] = ()) -> Status:
    """What the server lacks and what this vault lacks of ``refs`` (the lock's snapshots when empty):
    records, and the objects they reach. Reads only, on both sides."""
    here = vault._side("this vault")
    lock = [] if refs else _lock_entries(vault)
    here_lacks = missing(here, refs, lock)
    with _open(spec) as transport:
        server_lacks = _server_lacks(transport, here, refs, lock, _where(spec))
    return status_of(spec.name, spec.url, server_lacks, here_lacks)


def fetch(
    vault: Vault,
    spec: RemoteSpec,
    refs: Sequence[str] = (),
    *,
    blobs: bool = True,
    jobs: int = 4,
    progress: Progress | None = None,
) -> int:
    """``vault.remotes.fetch`` from a server: pull what ``refs`` (the lock's snapshots when empty) need
    and this vault lacks, records then objects, verified on arrival. Returns the objects fetched (0,
    with no request, when everything is here)."""
    here = vault._side("this vault")
    lock = [] if refs else list(read_lock(vault.root).values())
    lacking = missing(here, refs, lock, blobs=blobs)
    if not lacking:
        return 0
    fetched = 0
    if lacking.refs or lacking.lock:
        fetched += pull(vault, spec, lacking.refs, jobs=jobs, no_data=True, progress=progress).objects_sent
        lacking = missing(here, refs, lock, blobs=blobs)
    if lacking.objects:
        where = _where(spec)
        with _open(spec) as transport:
            source = ServerSource(transport)
            wanted = reachable(_Trees(here.objects, source), lacking.roots, where)  # type: ignore[arg-type]
            stats = download_objects(source, here.objects, wanted, where=where, jobs=jobs, progress=progress)
        fetched += stats.objects
    return fetched
