"""The tracking service (``vault.runs``): create, log to, end, find and export runs.

Objects first, metadata second: every object a run points at is stored (and its durability paid)
before the transaction that records it, and each of those objects is also recorded in
``object_refs`` under the owner ``run:<id>`` in that same transaction.
"""

from __future__ import annotations

import builtins
import json
import os
import secrets
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from labvault.entities import Run, RunStatus, utcnow
from labvault.errors import Conflict, NotFound, ValidationError
from labvault.refs import Digest, validate_name
from labvault.services.capture.environment import capture_environment
from labvault.services.capture.git import GitState, cached_git_state, capture_git
from labvault.services.capture.settings import max_untracked_size
from labvault.services.snapshots.lockfile import read_lock
from labvault.services.tracking.envelopes import store_run_envelope
from labvault.services.tracking.names import default_run_name, validate_run_name
from labvault.services.tracking.records import RunRecords, merge_capture, owner_of
from labvault.services.tracking.values import check_seed
from labvault.storage.meta.repos import runs as repo
from labvault.storage.meta.repos.object_refs import RefKind, add_refs
from labvault.storage.meta.store import MetaStore
from labvault.storage.objects.protocol import ObjectStore

if TYPE_CHECKING:
    from labvault.services.tracking.download import DownloadedFile

__all__ = ["InputResolver", "Tracking"]

#: Given a data reference, the content hash of its manifest (None when it cannot be resolved).
InputResolver = Callable[[str], str | None]


_GIT_WRITE_DELAY = 1.0  # seconds


class _GitLimits(TypedDict):
    exclude: builtins.list[Path]
    max_untracked: int


class _PendingGit:
    """A git capture in flight; whoever claims it first (its thread, or the run's end) writes it.

    When the thread's write fails (a locked database, a full disk), ``error`` says why and the
    run's end writes the capture again, with a warning: a run never ends with its commit silently lost.
    """

    def __init__(self) -> None:
        self.state: GitState | None = None
        self.ready = threading.Event()
        self.finishing = threading.Event()
        self.written = threading.Event()  # the thread's write ended, well or not
        self.error: str | None = None
        self._lock = threading.Lock()
        self._claimed = False

    def claim(self) -> bool:
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True


class Tracking(RunRecords):
    """Runs: the service behind ``vault.runs``, ``labvault run`` and ``labvault runs``."""

    def __init__(
        self,
        *,
        objects: ObjectStore,
        meta: MetaStore,
        user: str,
        default_project: str,
        root: Path,
        resolve_input: InputResolver | None = None,
    ) -> None:
        self.objects = objects
        self.meta = meta
        self.user = user
        self.default_project = default_project
        self.root = root
        self.resolve_input = resolve_input
        self._git_pending: dict[str, _PendingGit] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._keys: set[str] = set()

    # -- creating -------------------------------------------------------------------------------
    def create(
        self,
        *,
        project: str | None = None,
        name: str | None = None,
        parent_id: str | None = None,
        inputs: Iterable[str] = (),
        config: Iterable[str | os.PathLike[str]] = (),
        seed: int | None = None,
        tags: Mapping[str, object] | None = None,
        command: Sequence[str] | None = None,
        cwd: Path | None = None,
        capture: bool = True,
        background_git: bool = True,
        origin: tuple[str, int | None] | None = None,
    ) -> Run:
        """Record a new running run with everything captured; returns it.

        ``origin`` is the host and process id the run's code runs in when that is not this process
        (a server records its client's, so that a reader on the client's machine can tell when
        that process is gone); its pid is None when the process is not known.

        Git state is known at once when the tree is unchanged since the last capture; otherwise git
        runs on a worker thread and its answer is written with the run's end (:meth:`finish` waits
        for it), or after a second for a run still going, so a run killed later has it too.
        """
        project = validate_name(project or self.default_project, what="project name")
        here = (cwd or Path.cwd()).resolve()
        argv = list(command) if command is not None else [sys.executable, *sys.argv]
        name = validate_run_name(name or default_run_name(argv))
        refs = self._check_inputs(inputs)
        configs = self._read_configs(config, here)
        if parent_id is not None:
            parent_id = self.resolve(parent_id)
        if seed is not None:
            check_seed(seed)
        tag_values = self._check_tags(tags or {})
        doc: dict[str, Any] = {
            "command": argv,
            "cwd": str(here),
            "pid": os.getpid() if origin is None else origin[1],
            "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
            "config": [],
            "warnings": [],
        }
        object_refs: builtins.list[tuple[Digest, RefKind]] = []
        with self.objects.batch():
            if capture:
                env_bytes, warnings = capture_environment(self.root)
                env_digest = self.objects.put_bytes(env_bytes)
                doc["environment"] = str(env_digest)
                doc["warnings"].extend(warnings)
                object_refs.append((env_digest, "blob"))
            for path, data in configs:
                digest = self.objects.put_bytes(data)
                doc["config"].append({"path": path, "sha256": str(digest), "size": len(data)})
                object_refs.append((digest, "blob"))
        git_sync: GitState | None = None
        limits = self._git_limits(doc["warnings"]) if capture else None
        if limits is not None:
            # Unchanged since the last capture (a sweep): known at once. Otherwise git runs on the worker.
            git_sync = capture_git(here, **limits) if not background_git else cached_git_state(here, **limits)
            if git_sync is not None:
                with self.objects.batch():
                    self._apply_git(doc, git_sync, object_refs)
        now = utcnow()
        for _ in range(5):
            run_id = secrets.token_hex(6)
            row = {
                "id": run_id,
                "project": project,
                "name": name,
                "status": "running",
                "parent_id": parent_id,
                "user": self.user,
                "host": socket.gethostname() if origin is None else origin[0],
                "started_at": now,
                "ended_at": None,
                "exit_code": None,
                "error": None,
                "seed": seed,
                "inputs": json.dumps(refs),
                "capture": json.dumps(doc, sort_keys=True),
                "deleted_at": None,
            }
            try:
                with self.meta.transaction() as conn:
                    # 48 random bits: a collision is rare; the primary key refuses it and we draw again.
                    repo.insert_run(conn, row)
                    add_refs(conn, owner_of(run_id), object_refs)
                    repo.set_tags(conn, run_id, tag_values)
                break
            except Conflict:
                continue
        else:  # pragma: no cover - five collisions in a row
            raise Conflict("could not allocate a unique run id", hint="retry")
        if limits is not None and git_sync is None:
            pending = _PendingGit()
            self._git_pending[run_id] = pending
            self._git_worker().submit(self._capture_git_later, run_id, here, pending, limits)
        return Run(
            id=run_id,
            project=project,
            name=name,
            status="running",
            started_at=now,
            tags=dict(sorted(tag_values.items())),
            inputs=tuple(refs),
            parent_id=parent_id,
            user=self.user,
            host=str(row["host"]),
            seed=seed,
            capture=doc,
        )

    def _apply_git(self, doc: dict[str, Any], state: GitState, refs: builtins.list[tuple[Digest, RefKind]]) -> None:
        doc["git"] = state.info or None
        doc.setdefault("warnings", []).extend(state.warnings)
        if state.patch:
            digest = self.objects.put_bytes(state.patch)
            doc["patch"] = str(digest)
            refs.append((digest, "blob"))

    def _git_worker(self) -> ThreadPoolExecutor:
        # One long-lived thread: starting a thread per run costs more than the capture itself.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labvault-git")
        return self._executor

    def _git_limits(self, warnings: builtins.list[str]) -> _GitLimits:
        """What the code capture leaves out: every dataset path ``labvault.lock`` pins (restored
        from its snapshot, never stored again in a patch) and untracked files above the size limit.

        An invalid ``capture.max_untracked_size`` is the user's setting and stops the run (exit 2);
        a malformed lock file is not the run's business, so it only costs a warning.
        """
        limit = max_untracked_size(self.root)
        try:
            pinned = [self.root / key for key in read_lock(self.root)]
        except ValidationError as exc:
            pinned = []
            warnings.append(f"git: the patch may hold pinned data: {exc.message}")
        return {"exclude": pinned, "max_untracked": limit}

    def _capture_git_later(self, run_id: str, cwd: Path, pending: _PendingGit, limits: _GitLimits) -> None:
        try:
            pending.state = capture_git(cwd, **limits)
        except Exception as exc:  # capture never breaks a run
            pending.state = GitState(warnings=[f"git: capture failed: {type(exc).__name__}: {exc}"])
        pending.ready.set()
        # A short run records git with its end (one transaction fewer to contend with); a long one
        # gets it written now, so that a run killed later still says which code it ran.
        if pending.finishing.wait(_GIT_WRITE_DELAY) or not pending.claim():
            return
        try:
            update, refs = self._git_update(pending.state)
            self.update_capture(run_id, update, refs=refs)
        except Exception as exc:  # a capture never breaks a run: the run's end writes it again
            pending.error = f"{type(exc).__name__}: {exc}"
        finally:
            pending.written.set()

    def _git_update(self, state: GitState) -> tuple[dict[str, Any], builtins.list[tuple[Digest, RefKind]]]:
        update: dict[str, Any] = {}
        refs: builtins.list[tuple[Digest, RefKind]] = []
        with self.objects.batch():
            self._apply_git(update, state, refs)
        return update, refs

    def _take_git(self, run_id: str) -> tuple[dict[str, Any], builtins.list[tuple[Digest, RefKind]]] | None:
        """Wait for the run's git capture; the git update to write with its end, if not written yet."""
        pending = self._git_pending.pop(run_id, None)
        if pending is None:
            return None
        pending.finishing.set()
        pending.ready.wait()
        if not pending.claim():  # the thread took it: wait for its write, and redo it if it failed
            pending.written.wait()
            if pending.error is None:
                return None
        if pending.state is None:
            return None
        update, refs = self._git_update(pending.state)
        if pending.error is not None:
            update.setdefault("warnings", []).append(
                f"git: writing the capture during the run failed ({pending.error}); it was written when the run ended"
            )
        return update, refs

    # -- ending, resuming -----------------------------------------------------------------------
    def finish(
        self,
        run_id: str,
        *,
        status: RunStatus = "finished",
        exit_code: int | None = None,
        error: str | None = None,
    ) -> None:
        """End a running run; waits for its git capture first, so a run that ended has it."""
        git = self._take_git(run_id)
        with self.meta.transaction() as conn:
            found = repo.status_and_capture(conn, run_id)
            self._check_status(run_id, found[0] if found else None)
            if git is not None and found is not None:  # _check_status raised when found is None
                merge_capture(conn, run_id, *git, current=found[1])
            repo.end_run(conn, run_id, status=status, ended_at=utcnow(), exit_code=exit_code, error=error)
        if status == "finished":  # after the end commits: a page computes it meanwhile, or after a crash here
            store_run_envelope(self.meta, run_id)

    def resume(self, ref: str, *, origin: tuple[str, int | None] | None = None) -> Run:
        """Reopen a run that did not finish (running, failed or killed) in this process (or ``origin``'s,
        as in :meth:`create`): the run's process is now the one that resumed it."""
        run_id = self.resolve(ref)
        host, pid = (socket.gethostname(), os.getpid()) if origin is None else origin
        with self.meta.transaction() as conn:
            row = repo.run_row(conn, run_id)
            if row is None:  # purged since it was resolved
                raise NotFound(f"no run {ref!r}", hint="list runs with `labvault runs list`")
            if row.status == "finished":
                raise Conflict(f"run:{run_id} finished; finished runs are never changed", hint="start a new run")
            if row.deleted_at is not None:
                raise Conflict(f"run:{run_id} is deleted", hint=f"labvault runs restore {run_id}")
            repo.update_run(conn, run_id, status="running", host=host, ended_at=None, exit_code=None, error=None)
            merge_capture(conn, run_id, {"pid": pid}, [])
        return self.get(run_id)

    # -- delete, restore, export ----------------------------------------------------------------
    def delete(self, ref: str) -> Run:
        from labvault.services.tracking.lifecycle import delete_run

        return delete_run(self, self.resolve(ref))

    def restore(self, ref: str) -> Run:
        from labvault.services.tracking.lifecycle import restore_run

        return restore_run(self, self.resolve(ref))

    def export(self, ref: str) -> dict[str, Any]:
        """The self-contained ``run.yaml`` document of a run."""
        from labvault.services.tracking.export import export_run

        return export_run(self, self.get(ref))

    def download_artifacts(
        self, ref: str, dest: str | os.PathLike[str], *, name: str | None = None
    ) -> builtins.list[DownloadedFile]:
        """Write the run's artifacts (or the one called ``name``) under ``dest``, verified; see download.py."""
        from labvault.services.tracking.download import download_artifacts

        return download_artifacts(self.objects, self.get(ref), Path(dest), name=name)

    def compare(self, refs: Sequence[str]) -> dict[str, Any]:
        from labvault.services.tracking.export import compare_runs

        return compare_runs(self, [self.get(r) for r in refs])
