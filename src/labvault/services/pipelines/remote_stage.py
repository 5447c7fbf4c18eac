"""One stage run away from the project: deps from the object store, the command in a scratch folder, outputs back.

This is what a Dask worker runs (:func:`run_stage_job`). It shares no filesystem with the project:

1. the object store is opened from its location (a local vault folder or a remote URL);
2. every dep (a file's digest, or a folder's tree digest) is materialised, verified, at its
   project-relative path below a fresh scratch folder (written through the contained-write helper,
   so no stored name leads a write out of it);
3. the command runs with ``sh -c`` in ``wdir`` below the scratch folder, in its own process group,
   with a timeout; stdout and stderr are kept interleaved, the last 64 KiB;
4. each declared output is stored: a file by its bytes, a folder as a Merkle tree, hashed the way
   ``data add`` hashes a folder, so a digest is the same whichever executor made it;
5. the scratch folder is removed, whatever happened.

A failure of labvault itself (a corrupt dep, an unreachable store) is an outcome with return code
125 and the error in the log, never an exception: the runner treats every outcome alike.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, cast

from labvault.errors import LabvaultError
from labvault.refs import Digest
from labvault.services.pipelines.executor import StageJob, StageOutcome
from labvault.services.snapshots.build import build_tree
from labvault.services.snapshots.scan import scan_path
from labvault.services.snapshots.statcache import StatCache
from labvault.storage.contained import Dest
from labvault.storage.contained_paths import split_rel
from labvault.storage.objects.location import close_store, open_store_at
from labvault.storage.objects.materialize import materialize_into
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.tree import TreeEntry, decode_tree, encode_tree, entry_digest

__all__ = ["LOG_TAIL", "WRAPPER_ERROR", "run_stage_job", "stop_stages"]

LOG_TAIL = 64 * 1024
WRAPPER_ERROR = 125  # as `labvault run`: labvault itself failed, not the command
_KILL_GRACE = 3.0

# Process groups of the stages running in this process, by executor token: ``stop_stages`` ends them.
_RUNNING: dict[str, set[int]] = {}
_STOPPED: set[str] = set()
_LOCK = threading.Lock()


def _tree_entries(store: ObjectStore, digest: Digest) -> list[TreeEntry] | None:
    """The entries if the object is a canonical tree, else None (it is a file's bytes)."""
    if store.info(digest).size > 64 * 1024 * 1024:
        return None
    data = store.get_bytes(digest, verify=True)
    if not data.startswith(b'{"entries":['):
        return None
    try:
        entries = decode_tree(data, digest=digest)
    except LabvaultError:
        return None
    return entries if encode_tree(entries) == data else None


def _materialize_tree(store: ObjectStore, entries: list[TreeEntry], into: Dest, rel: str) -> None:
    into.mkdir(rel)
    for entry in entries:
        child = f"{rel}/{entry.name}"
        if entry.type == "link":
            into.symlink(child, entry.target or "")
        elif entry.type == "dir":
            digest = entry_digest(entry)
            _materialize_tree(store, decode_tree(store.get_bytes(digest, verify=True), digest=digest), into, child)
        else:
            materialize_into(store, entry_digest(entry), into, child)


def materialize_deps(store: ObjectStore, deps: dict[str, str], scratch: Path) -> None:
    with Dest.open(scratch) as into:
        for rel, value in sorted(deps.items()):
            split_rel(rel)  # a dep path never climbs out of the scratch folder
            digest = Digest(value.removeprefix("sha256:"))
            entries = _tree_entries(store, digest)
            if entries is None:
                materialize_into(store, digest, into, rel)
            else:
                _materialize_tree(store, entries, into, rel)


def store_outputs(store: ObjectStore, outs: tuple[str, ...], scratch: Path) -> tuple[dict[str, str], list[str]]:
    """Digests of the outputs that exist, and the declared ones that do not."""
    stored: dict[str, str] = {}
    missing: list[str] = []
    with store.batch():
        for rel in outs:
            split_rel(rel)
            path = scratch / rel
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                missing.append(rel)
            elif path.is_file():
                stored[rel] = str(store.put_file(path))
            else:
                cache = StatCache(scratch / ".labvault-no-stat-cache")  # never saved: every file is hashed
                built = build_tree(store, scan_path(path), cache, referenced=set())
                stored[rel] = str(built.root)
    return stored, missing


class _Tail:
    """The last ``LOG_TAIL`` bytes of a stream, read on a thread until it closes."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self.thread.start()

    def _drain(self, stream: BinaryIO) -> None:
        while chunk := stream.read(65536):
            self.buf += chunk
            if len(self.buf) > 2 * LOG_TAIL:
                del self.buf[: len(self.buf) - LOG_TAIL]

    def text(self) -> str:
        self.thread.join(timeout=5)
        return bytes(self.buf[-LOG_TAIL:]).decode("utf-8", errors="replace")


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pgid, sig)


def run_command(job: StageJob, cwd: Path, *, token: str = "") -> tuple[int, str]:
    """Run ``job.cmd`` with ``sh -c`` in ``cwd``; (return code, log tail). A timeout kills the process group."""
    env = {**os.environ, **job.env}
    proc = subprocess.Popen(
        ["sh", "-c", job.cmd],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: a timeout or a cancel ends every child too
    )
    with _LOCK:
        _RUNNING.setdefault(token, set()).add(proc.pid)
        stopped = token in _STOPPED  # stop_stages ran between the check at the start and now
    if stopped:
        _killpg(proc.pid, signal.SIGTERM)
    tail = _Tail(cast(BinaryIO, proc.stdout))  # a pipe: stdout=PIPE
    note = ""
    try:
        try:
            proc.wait(timeout=job.timeout)
        except subprocess.TimeoutExpired:
            note = f"\nlabvault: stage {job.name} timed out after {job.timeout:g} s; its processes were stopped\n"
            _killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=_KILL_GRACE)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        with _LOCK:
            _RUNNING.get(token, set()).discard(proc.pid)
        _killpg(proc.pid, signal.SIGKILL)  # what the command left running in the background goes too
    log = tail.text()
    tail.stream.close()
    return proc.returncode, (log + note)[-LOG_TAIL:]


def stop_stages(token: str) -> int:
    """End every stage process group this process runs for ``token``; the number stopped."""
    with _LOCK:
        _STOPPED.add(token)
        pgids = list(_RUNNING.get(token, ()))
    for pgid in pgids:
        _killpg(pgid, signal.SIGTERM)
    return len(pgids)


def _where() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return socket.gethostname()


def run_stage_job(job: StageJob, location: str, *, token: str = "", scratch_dir: str | None = None) -> StageOutcome:
    """Materialise, run, store; always returns an outcome (see the module docstring)."""
    started = time.time()
    worker = _where()
    scratch = Path(tempfile.mkdtemp(prefix="labvault-stage-", dir=scratch_dir))
    opened: list[ObjectStore] = []
    try:
        if token in _STOPPED:
            return StageOutcome(
                job.name,
                -signal.SIGTERM,
                {},
                "labvault: cancelled before it started\n",
                started,
                time.time(),
                worker=worker,
            )
        store = open_store_at(location)
        opened.append(store)
        materialize_deps(store, dict(job.deps), scratch)
        # The folders an output goes in may be in the project's git checkout but in no dep: make them.
        with Dest.open(scratch) as into:
            for rel in (job.wdir, *(posixpath.dirname(out) for out in job.outs)):
                if rel not in ("", "."):
                    split_rel(rel)
                    into.mkdir(rel)
        cwd = scratch if job.wdir in ("", ".") else scratch / job.wdir
        code, log = run_command(job, cwd, token=token)
        outs: dict[str, str] = {}
        missing: list[str] = []
        if code == 0:
            outs, missing = store_outputs(store, job.outs, scratch)
            if missing:
                outs = {}
                log += f"labvault: stage {job.name} did not write {', '.join(missing)}\n"
        return StageOutcome(job.name, code, outs, log[-LOG_TAIL:], started, time.time(), tuple(missing), worker)
    except (LabvaultError, OSError) as exc:
        hint = getattr(exc, "hint", "")
        log = f"labvault: error: {exc}\n" + (f"labvault: hint: {hint}\n" if hint else "")
        return StageOutcome(job.name, WRAPPER_ERROR, {}, log, started, time.time(), worker=worker)
    finally:
        for store in opened:
            close_store(store)
        with Dest.open(scratch.parent, create=False) as parent:
            parent.remove(scratch.name)
