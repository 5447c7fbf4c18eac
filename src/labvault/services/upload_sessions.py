"""Upload sessions through the team server: a large object sent in pieces at their offsets into one
temp file, verified and renamed into place at commit (``storage/objects/uploads.py``).

Only a store on the server's own filesystem offers them. On the team vault's object storage (S3,
GCS) several server machines share no folder, so there ``begin_upload`` answers None and the client
sends chunks, each an object, then composes them (``object_streams.compose_chunks``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labvault.errors import NotFound
from labvault.refs import Digest
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.uploads import MAX_UPLOAD, Session, UploadSessions

__all__ = [
    "MAX_UPLOAD",
    "abort_upload",
    "begin_upload",
    "commit_upload",
    "session_json",
    "upload_status",
    "write_piece",
]


def _sessions(objects: ObjectStore) -> UploadSessions | None:
    found = getattr(objects, "upload_sessions", None)  # through a locked store's pass-through too
    return found if isinstance(found, UploadSessions) else None


def _required(objects: ObjectStore) -> UploadSessions:
    found = _sessions(objects)
    if found is None:
        raise NotFound(
            "this server's object store takes no upload sessions",
            hint="upload chunks, then POST /api/v1/objects/{digest}/compose",
        )
    return found


def session_json(session: Session) -> dict[str, Any]:
    return {
        "upload": session.id,
        "digest": str(session.digest),
        "size": session.size,
        "received": [list(span) for span in session.received],
    }


def begin_upload(objects: ObjectStore, claimed: Digest, size: int) -> Session | None:
    """A new session for ``claimed`` (``size`` bytes); None where the store offers none."""
    sessions = _sessions(objects)
    return None if sessions is None else sessions.begin(claimed, size)


def upload_status(objects: ObjectStore, upload_id: str) -> Session:
    return _required(objects).status(upload_id)


def write_piece(objects: ObjectStore, upload_id: str, offset: int, read: Callable[[], bytes]) -> Session:
    return _required(objects).write(upload_id, offset, read)


def commit_upload(objects: ObjectStore, upload_id: str) -> tuple[Digest, bool, int]:
    """Verify the session's bytes and store them as its object: ``(digest, created, size)``."""
    sessions = _required(objects)
    with objects.batch():  # the team vault's gc lock too, when the store is wrapped in it
        return sessions.commit(upload_id)


def abort_upload(objects: ObjectStore, upload_id: str) -> None:
    _required(objects).abort(upload_id)
