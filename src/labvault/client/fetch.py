"""Reading objects from a server, verified: what showing, downloading and caching model versions and
run artifacts need (``has``, ``open``, ``get_bytes``, ``info``), so that the services' own tree
walkers and contained writers (``write_version``, ``download_artifacts``) work on the server's objects
unchanged.

Every object is hashed as it arrives and refused (exit 5) unless its bytes are its name; nothing
unverified is ever handed to a caller. Large objects spill to a temp file rather than memory.
"""

from __future__ import annotations

import hashlib
import tempfile
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from labvault.entities import ObjectInfo
from labvault.errors import IntegrityError, NotFound
from labvault.refs import Digest

if TYPE_CHECKING:
    from labvault.client.transport import Transport
    from labvault.storage.objects.protocol import ObjectStore

__all__ = ["ObjectReader", "reader_of"]

_SPILL = 8 * 1024 * 1024  # kept in memory below this size


class ObjectReader:
    """Read-only, verifying access to a server's objects (``GET/HEAD /objects/{digest}``)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def has(self, digest: Digest) -> bool:
        try:
            self.info(digest)
        except NotFound:
            return False
        return True

    def info(self, digest: Digest) -> ObjectInfo:
        response = self.transport.request("HEAD", f"/objects/{digest}", raw=True)
        return ObjectInfo(digest, int(response.headers.get("content-length", "0")), 0.0)

    def open(self, digest: Digest, *, verify: bool = True) -> BinaryIO:
        """The object's bytes in a rewound file, after they verified (``verify`` is always on here)."""
        out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPILL)  # noqa: SIM115 - returned open, to the caller
        h = hashlib.sha256()
        try:
            with self.transport.stream("GET", f"/objects/{digest}") as response:
                for block in response.iter_bytes(1 << 20):
                    h.update(block)
                    out.write(block)
            if h.hexdigest() != digest.hex:
                raise IntegrityError(
                    f"the server sent bytes for {digest} that hash to sha256:{h.hexdigest()}",
                    hint="the object is corrupt on the server or in transit; run `labvault fsck` on the server",
                )
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return cast(BinaryIO, out)

    def get_bytes(self, digest: Digest, *, verify: bool = True) -> bytes:
        with self.open(digest) as f:
            return f.read()


def reader_of(transport: Transport) -> ObjectStore:
    """An :class:`ObjectReader` typed as the store protocol the read-side services take (they call
    only ``has``, ``open``, ``get_bytes`` and ``info``)."""
    return cast("ObjectStore", ObjectReader(transport))
