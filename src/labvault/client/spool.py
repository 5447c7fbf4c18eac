"""The tracking spool: what a run logged through a server and the server has not acknowledged yet.

One append-only file per run and process under ``spool_dir()/<server>/``, named
``<run id>-<nonce>.spool``: a JSON header line, then one JSON array per record::

    {"key": k, "value": v, "step": n}  a metric point, as the server's batch takes it (value: a number,
                                    "NaN", "Infinity" or "-Infinity"), so a batch is sent unparsed
    ["p", {key: value, ...}]       params
    ["t", {key: text, ...}]        tags
    ["e", status, exit_code, error] the run's end

Beside it, ``<name>.state`` says how far the server has acknowledged (``acked``, a byte offset)
and which byte range is being sent (``sending``). A batch's Idempotency-Key is
``<nonce>-<start>-<end>``: a resend after a crash covers the same range under the same key, so
the server stores it once.

Durability. The writer maps the file (``MAP_SHARED``) and copies each record into the mapping
before ``log_*`` returns: the bytes are then in the OS's page cache, as after a ``write()``, so a
process crash or SIGKILL loses nothing, and the hot path makes no system call. The file grows in
steps of zeros; a reader stops at the first zero byte, which also drops a record a crash cut
short. The sender fsyncs the spool before each batch and the state after each acknowledgement, so
a power loss loses at most what was logged since the sender's last pass (about a second) and never
makes the client send a batch twice.

The writer holds an exclusive ``flock`` on its spool for its life; whoever sends a spool left by
another process (``labvault sync``, or the next process that tracks a run) takes that lock first,
so a live spool is never sent by two processes.

The sending side (a spool's state, its batches, a spool left by another process) is
:mod:`labvault.client.spool_reader`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import mmap
import os
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from hashlib import sha256
from pathlib import Path
from typing import Any

from labvault.errors import ValidationError
from labvault.services.tracking.names import validate_key

__all__ = [
    "FORMAT",
    "MAGIC",
    "SPOOL_NAME",
    "SpoolWriter",
    "server_folder",
    "spool_files",
]

MAGIC = "labvault-spool"
FORMAT = 1
_MAP_STEP = 4 * 1024 * 1024  # the spool file grows by this much at least (zeros past the records)
SPOOL_NAME = re.compile(r"^([0-9a-f]{6,64})-([0-9a-f]{16})\.spool$")  # <run id>-<nonce>.spool


def server_folder(base: Path, url: str) -> Path:
    """The spool folder of one server (its URL hashed: a URL is not a file name)."""
    return base / sha256(url.encode("utf-8")).hexdigest()[:16]


def spool_files(folder: Path) -> list[Path]:
    """The spool files in ``folder``, oldest first (names that are not spools are ignored)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if SPOOL_NAME.match(p.name) and p.is_file() and not p.is_symlink()]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def _number_text(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    return '"NaN"' if math.isnan(value) else '"Infinity"' if value > 0 else '"-Infinity"'


class SpoolWriter:
    """The tracking process's side: appends records; each ``append_*`` is one copy into the mapping."""

    def __init__(self, folder: Path, *, url: str, run_id: str, owned: bool = True) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.nonce = secrets.token_hex(8)
        self.run_id = run_id
        self.path = folder / f"{run_id}-{self.nonce}.spool"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # held for this process's life (see the module docstring)
        os.ftruncate(self._fd, _MAP_STEP)
        self._map: mmap.mmap | None = mmap.mmap(self._fd, _MAP_STEP)
        header = json.dumps({MAGIC: FORMAT, "url": url, "run": run_id, "nonce": self.nonce, "owned": owned}) + "\n"
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}
        self.written = 0
        self._write(header.encode("utf-8"))

    def _write(self, data: bytes) -> None:
        # A store into the file's shared mapping is in the OS's page cache at once: it survives the
        # process (SIGKILL included) without a system call per record.
        with self._lock:
            mapped = self._map
            if mapped is None:
                raise ValidationError(f"the spool of run:{self.run_id} is closed", hint="start a new run")
            end = self.written + len(data)
            if end > len(mapped):
                mapped.resize(max(len(mapped) * 2, end + _MAP_STEP))
            mapped[self.written : end] = data
            self.written = end

    def append_metric(self, key: str, value: float, step: int) -> None:
        """One point: the hot path of a training loop (one format, one copy; _write inlined)."""
        prefix = self._keys.get(key)
        if prefix is None:
            prefix = self._prefix(key)
        if value - value == 0.0:  # finite (NaN and infinities give NaN)
            data = f'{prefix}{value!r},"step":{step:d}}}\n'.encode()
        else:
            data = f'{prefix}{_number_text(value)},"step":{step:d}}}\n'.encode()
        with self._lock:
            mapped = self._map
            start = self.written
            end = start + len(data)
            if mapped is not None and end <= len(mapped):
                mapped[start:end] = data
                self.written = end
                return
        self._write(data)  # closed, or the mapping must grow

    def append_metrics(self, points: Sequence[tuple[str, float, int]]) -> None:
        keys = self._keys
        parts = []
        for key, value, step in points:
            prefix = keys.get(key)
            if prefix is None:
                prefix = self._prefix(key)
            parts.append(f'{prefix}{_number_text(value)},"step":{step:d}}}\n')
        self._write("".join(parts).encode("utf-8"))

    def _prefix(self, key: str) -> str:
        validate_key(key, what="metric")
        prefix = self._keys[key] = '{"key":' + json.dumps(key) + ',"value":'
        return prefix

    def append_params(self, params: Mapping[str, Any]) -> None:
        self._write((json.dumps(["p", dict(params)], separators=(",", ":")) + "\n").encode("utf-8"))

    def append_tags(self, tags: Mapping[str, str]) -> None:
        self._write((json.dumps(["t", dict(tags)], separators=(",", ":")) + "\n").encode("utf-8"))

    def append_end(self, status: str, exit_code: int | None, error: str | None) -> None:
        self._write((json.dumps(["e", status, exit_code, error], separators=(",", ":")) + "\n").encode("utf-8"))

    def close(self) -> None:
        """Trim the mapped room, release the lock (the file stays until the server has it all)."""
        with self._lock:
            if self._map is not None:
                self._map.close()
                self._map = None
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self.written)
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
