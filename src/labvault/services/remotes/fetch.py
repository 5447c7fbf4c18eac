"""Fetch what a checkout or a ``get`` needs from the default remote (docs/remotes.md).

``data checkout`` and ``get`` call :func:`missing` first: the records the references name (the
lock's snapshots, found by content, when there are none) and every object they reach. Whatever
this vault lacks is pulled from the default remote, objects verified on arrival as any pull;
nothing is asked of a remote when everything is here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from labvault.errors import IntegrityError, NotFound
from labvault.refs import Digest
from labvault.services.remotes.copy import reachable
from labvault.services.remotes.plan import gather
from labvault.services.remotes.side import Side
from labvault.services.snapshots.lockfile import LockEntry

__all__ = ["Missing", "Status", "missing", "status_of"]

ADD_DEFAULT_HINT = "add one with `labvault remote add NAME PATH --default` (a folder, or --db URL --objects URL)"


@dataclass(slots=True)
class Missing:
    """What this vault lacks for some references: records (by reference) and objects."""

    refs: list[str] = field(default_factory=list)
    lock: list[str] = field(default_factory=list)  # the lock's snapshots that are not here
    objects: int = 0  # objects not here (at least; a missing tree hides what is below it)
    roots: list[tuple[Digest, str]] = field(default_factory=list)  # of the records that are here
    looked_up: list[NotFound] = field(default_factory=list)  # why each of ``refs`` is not here

    def __bool__(self) -> bool:
        return bool(self.refs or self.lock or self.objects)

    def records(self) -> list[str]:
        return [*self.refs, *self.lock]

    def describe(self) -> str:
        parts = list(self.refs) + [f"{ref} (labvault.lock)" for ref in self.lock]
        if self.objects:
            parts.append(f"{self.objects} objects")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Status:
    """``labvault remote status``: what the remote lacks and what this vault lacks."""

    remote: str
    url: str
    remote_lacks: Missing
    here_lacks: Missing
    reachable: bool = True  # False: the remote's folder holds no vault yet (it lacks everything)

    @property
    def in_sync(self) -> bool:
        return not self.remote_lacks and not self.here_lacks

    def to_json(self) -> dict[str, Any]:
        def side(m: Missing) -> dict[str, Any]:
            return {"records": m.records(), "objects": m.objects}

        return {
            "remote": self.remote,
            "url": self.url,
            "remote_has_vault": self.reachable,
            "remote_lacks": side(self.remote_lacks),
            "here_lacks": side(self.here_lacks),
            "in_sync": self.in_sync,
        }


def status_of(name: str, url: str, remote_lacks: Missing, here_lacks: Missing) -> Status:
    """The status of a reachable remote; a REF that neither side has is unknown (exit 3)."""
    nowhere = [r for r in here_lacks.refs if r in remote_lacks.refs]
    if nowhere:
        raise NotFound(
            f"neither this vault nor remote {name!r} has {', '.join(nowhere)}",
            hint="list what each holds with `labvault data list`, `labvault runs list`, `labvault models list`",
        )
    return Status(name, url, remote_lacks, here_lacks)


def missing(here: Side, refs: Sequence[str], lock: Iterable[LockEntry] = (), *, blobs: bool = True) -> Missing:
    """What ``here`` lacks of ``refs`` and of the lock entries, and of the objects they reach
    (with ``blobs=False``, of the trees only: a file's object is then looked for when it is read)."""
    out = Missing()
    records = []
    for entry in lock:
        try:
            records += gather(here, [], lock=[entry]).records
        except NotFound:
            out.lock.append(str(entry.ref))
    for ref in refs:
        try:
            records += gather(here, [ref], no_data=True).records
        except NotFound as exc:
            out.refs.append(ref)
            out.looked_up.append(exc)
    out.roots = [r for record in records for r in record.refs]
    try:
        wanted = reachable(here.objects, out.roots, here.where) if out.roots else []
    except IntegrityError:  # a tree is not here (or is damaged): what is below it is fetched too
        out.objects = 1 + sum(not here.objects.has(d) for d, _ in out.roots)
        return out
    if blobs:
        out.objects = sum(not here.objects.has(d) for d in wanted)
    return out
