"""An object store named by a picklable location, for processes that hold no vault (Dask workers).

A location is a local vault folder (the ``.labvault`` directory, whose ``objects/`` holds the store)
or a remote URL (``s3://bucket/prefix``, any fsspec URL). :func:`location_of` gives a store's
location; :func:`open_store_at` opens it again in another process. A minimal opener until the
general ``open_object_store`` lands; it takes the same locations.
"""

from __future__ import annotations

import socket
from pathlib import Path

from labvault.errors import NotFound, ValidationError
from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.remote import FsspecObjectStore

__all__ = ["close_store", "is_local_location", "is_this_machine", "location_of", "open_store_at"]

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def is_local_location(location: str) -> bool:
    """True for a folder on this machine's filesystem (a path or ``file://``), False for a remote URL."""
    return "://" not in location or location.startswith("file://")


def _local_path(location: str) -> Path:
    return Path(location.removeprefix("file://"))


def location_of(store: ObjectStore) -> str:
    """The location :func:`open_store_at` reopens ``store`` from."""
    if isinstance(store, LocalObjectStore):
        return str(store.vault_dir.resolve())
    if isinstance(store, FsspecObjectStore):
        return store.url
    raise ValidationError(
        f"a {type(store).__name__} cannot be opened from another process",
        hint="use a vault whose object store is a local folder or a remote URL (s3://...)",
    )


def open_store_at(location: str) -> ObjectStore:
    """Open the object store at ``location`` (credentials of a remote come from the environment)."""
    if not is_local_location(location):
        return FsspecObjectStore(location)
    path = _local_path(location)
    if not (path / "objects").is_dir():
        raise NotFound(
            f"no labvault object store at {path} on {socket.gethostname()}",
            hint="a local object store is reachable only from this machine; use a remote one (s3://...)",
        )
    return LocalObjectStore(path)


def close_store(store: ObjectStore) -> None:
    """Let go of what :func:`open_store_at` opened (a local store's packs, index and temp-file lock)."""
    if isinstance(store, LocalObjectStore):
        store.close()


def is_this_machine(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine: loopback, its own name, or one of its addresses."""
    host = host.strip("[]").lower()
    if not host or host in _LOOPBACK_NAMES or host.startswith("127.") or host in ("::1", "0.0.0.0", "::"):
        return True
    if host in (socket.gethostname().lower(), socket.getfqdn().lower()):
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    for family, _, _, _, addr in infos:
        ip = str(addr[0])
        if ip.startswith("127.") or ip == "::1":
            return True
        # Binding succeeds only to an address one of this machine's interfaces holds.
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((ip, 0))
            return True
        except OSError:
            continue
    return False
