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
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from labvault.entities import Artifact, MetricPoint, Run, RunStatus, utcnow
from labvault.errors import AmbiguousReference, Conflict, NotFound, ValidationError
from labvault.refs import Digest, parse_ref, validate_name
from labvault.services.capture.environment import capture_environment
from labvault.services.capture.git import GitState, cached_git_state, capture_git
from labvault.services.tracking import artifacts as _artifacts
from labvault.services.tracking.filters import parse_filter, parse_sort
from labvault.services.tracking.names import (
    encode_param,
    metric_value,
    parse_run_id,
    validate_key,
    validate_run_name,
)
from labvault.storage.meta.repos import runs as repo
from labvault.storage.meta.repos.metric_appender import MetricAppender
from labvault.storage.meta.repos.object_refs import RefKind, add_refs
from labvault.storage.meta.repos.run_query import compile_filter, compile_sort
from labvault.storage.meta.store import MetaStore
from labvault.storage.meta.tables import runs as runs_table
from labvault.storage.objects.local import LocalObjectStore

__all__ = ["InputResolver", "Tracking"]

#: Given a data reference, the content hash of its manifest (None when it cannot be resolved).
InputResolver = Callable[[str], str | None]


_GIT_WRITE_DELAY = 1.0  # seconds


def _owner(run_id: str) -> str:
    return f"run:{run_id}"


class _PendingGit:
    """A git capture in flight; whoever claims it first (its thread, or the run's end) writes it."""

    def __init__(self) -> None:
        self.state: GitState | None = None
        self.ready = threading.Event()
        self.finishing = threading.Event()
        self._lock = threading.Lock()
        self._claimed = False

    def claim(self) -> bool:
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True


def _merge_capture(
    conn: Connection,
    run_id: str,
    update: Mapping[str, Any],
    refs: Sequence[tuple[Digest, RefKind]],
    *,
    current: str | None = None,
) -> None:
    if current is None:
        row = conn.execute(sa.select(runs_table.c.capture).where(runs_table.c.id == run_id).with_for_update()).first()
        if row is None:
            raise NotFound(f"no run run:{run_id}")
        current = row[0]
    doc = json.loads(current)
    for key, value in update.items():
        if isinstance(value, list) and isinstance(doc.get(key), list):
            doc[key] = doc[key] + value
        else:
            doc[key] = value
    repo.update_run(conn, run_id, capture=json.dumps(doc, sort_keys=True))
    add_refs(conn, _owner(run_id), refs)


class Tracking:
    """Runs: the service behind ``vault.runs``, ``labvault run`` and ``labvault runs``."""

    def __init__(
        self,
        *,
        objects: LocalObjectStore,
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
    ) -> Run:
        """Record a new running run with everything captured; returns it.

        Git state is captured on a background thread (it spawns git) and written as soon as it is
        known; :meth:`finish` waits for it, so a finished run always has it.
        """
        project = validate_name(project or self.default_project, what="project name")
        here = (cwd or Path.cwd()).resolve()
        argv = list(command) if command is not None else [sys.executable, *sys.argv]
        name = validate_run_name(name or _default_name(argv))
        refs = self._check_inputs(inputs)
        configs = self._read_configs(config, here)
        if parent_id is not None:
            parent_id = self.resolve(parent_id)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValidationError(f"invalid seed {seed!r}", hint="a seed is a non-negative integer")
        tag_values = self._check_tags(tags or {})
        doc: dict[str, Any] = {
            "command": argv,
            "cwd": str(here),
            "pid": os.getpid(),
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
        if capture:
            # Unchanged since the last capture (a sweep): known at once. Otherwise git runs on the worker.
            git_sync = capture_git(here) if not background_git else cached_git_state(here)
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
                "host": socket.gethostname(),
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
                    add_refs(conn, _owner(run_id), object_refs)
                    repo.set_tags(conn, run_id, tag_values)
                break
            except Conflict:
                continue
        else:  # pragma: no cover - five collisions in a row
            raise Conflict("could not allocate a unique run id", hint="retry")
        if capture and git_sync is None:
            pending = _PendingGit()
            self._git_pending[run_id] = pending
            self._git_worker().submit(self._capture_git_later, run_id, here, pending)
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

    def _capture_git_later(self, run_id: str, cwd: Path, pending: _PendingGit) -> None:
        try:
            pending.state = capture_git(cwd)
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
        except Exception:  # the run may be gone (deleted vault in a test, closed store): nothing to add to
            pass

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
        if not pending.claim() or pending.state is None:
            return None
        return self._git_update(pending.state)

    def _check_inputs(self, inputs: Iterable[str]) -> builtins.list[str]:
        if isinstance(inputs, str):
            inputs = [inputs]
        return [str(parse_ref(ref)) for ref in inputs]

    def _read_configs(self, config: Iterable[str | os.PathLike[str]], cwd: Path) -> builtins.list[tuple[str, bytes]]:
        if isinstance(config, str | os.PathLike):
            config = [config]
        out = []
        for item in config:
            path = Path(item)
            full = path if path.is_absolute() else cwd / path
            if not full.is_file():
                raise ValidationError(f"config file {str(item)!r} not found", hint="give the path of an existing file")
            out.append((str(item), full.read_bytes()))
        return out

    def _check_tags(self, tags: Mapping[str, object]) -> dict[str, str]:
        return {validate_key(k, what="tag"): str(v) for k, v in tags.items()}

    # -- reading --------------------------------------------------------------------------------
    def resolve(self, ref: str) -> str:
        """The full id of ``run:<id>``, a bare id or a unique prefix of 6+ hex digits."""
        run_id = parse_run_id(ref)
        with self.meta.read() as conn:
            if len(run_id) == 12 and repo.run_row(conn, run_id) is not None:
                return run_id
            matches = repo.match_prefix(conn, run_id)
        if not matches:
            raise NotFound(f"no run {ref!r}", hint="list runs with `labvault runs list`")
        if len(matches) > 1:
            raise AmbiguousReference(run_id, [f"run:{m}" for m in matches])
        return matches[0]

    def get(self, ref: str) -> Run:
        run_id = self.resolve(ref)
        with self.meta.read() as conn:
            found = repo.load_runs(conn, [run_id])
        if not found:
            raise NotFound(f"no run {ref!r}", hint="list runs with `labvault runs list`")
        return found[0]

    def list(
        self,
        *,
        project: str | None = None,
        filter: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        deleted: bool = False,
    ) -> builtins.list[Run]:
        """Runs matching ``filter`` (the filter language of docs/tracking.md), newest first by default."""
        query = sa.select(runs_table.c.id)
        query = query.where(runs_table.c.deleted_at.is_not(None) if deleted else runs_table.c.deleted_at.is_(None))
        if project:
            query = query.where(runs_table.c.project == validate_name(project, what="project name"))
        if filter and filter.strip():
            query = query.where(compile_filter(parse_filter(filter), sqlite=self.meta.is_sqlite))
        order = compile_sort(parse_sort(sort)) if sort else [runs_table.c.started_at.desc(), runs_table.c.id]
        query = query.order_by(*order)
        if limit is not None:
            if limit < 0:
                raise ValidationError(f"invalid limit {limit}", hint="give a limit of 0 or more")
            query = query.limit(limit)
        with self.meta.read() as conn:
            ids = list(conn.execute(query).scalars())
            return repo.load_runs(conn, ids)

    def history(self, ref: str, key: str | None = None) -> dict[str, builtins.list[MetricPoint]]:
        run_id = self.resolve(ref)
        with self.meta.read() as conn:
            return repo.metric_history(conn, run_id, key)

    def max_steps(self, run_id: str) -> dict[str, int]:
        with self.meta.read() as conn:
            return repo.max_steps(conn, run_id)

    # -- logging --------------------------------------------------------------------------------
    def _require_open(self, conn: Connection, run_id: str) -> None:
        self._check_status(run_id, repo.run_status(conn, run_id))

    def _check_status(self, run_id: str, status: str | None) -> None:
        if status is None:
            raise NotFound(f"no run run:{run_id}", hint="list runs with `labvault runs list`")
        if status != "running":
            raise Conflict(
                f"run:{run_id} is {status}; a run that ended is never changed",
                hint=f"resume it with lv.start_run(run_id={run_id!r}) unless it finished, or start a new run",
            )

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        encoded = {validate_key(k, what="param"): encode_param(k, v) for k, v in params.items()}
        with self.meta.transaction() as conn:
            self._require_open(conn, run_id)
            repo.add_params(conn, run_id, encoded)

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        values = self._check_tags(tags)
        with self.meta.transaction() as conn:
            self._require_open(conn, run_id)
            repo.set_tags(conn, run_id, values)

    def log_metrics(self, run_id: str, points: Sequence[tuple[str, object, int]], *, ts_ms: int | None = None) -> None:
        """Append ``(key, value, step)`` points in one transaction; durable when this returns."""
        stamp = ts_ms if ts_ms is not None else time.time_ns() // 1_000_000
        rows: builtins.list[repo.MetricRow] = []
        keys = self._keys
        for key, value, step in points:
            if key not in keys:
                validate_key(key, what="metric")
                if len(keys) < 100_000:
                    keys.add(key)
            if isinstance(step, bool) or not isinstance(step, int):
                raise ValidationError(f"metric {key!r}: step must be an integer, got {step!r}", hint="pass step=<int>")
            rows.append((run_id, key, step, stamp, metric_value(key, value)))
        self._appender().append(rows)

    def _appender(self) -> MetricAppender:
        # One per thread: each holds a connection, and SQLite connections are not for sharing.
        appender: MetricAppender | None = getattr(self._local, "appender", None)
        if appender is None:
            appender = self._local.appender = MetricAppender(self.meta)
        return appender

    def close(self) -> None:
        """Release this thread's metric connection (the vault's close disposes of the rest)."""
        appender = getattr(self._local, "appender", None)
        if appender is not None:
            appender.close()
            self._local.appender = None

    def log_artifact(
        self, run_id: str, path: str | os.PathLike[str], *, name: str | None = None, role: str = "artifact"
    ) -> Artifact:
        """Store a file (a blob) or a folder (a tree) and record it on the run under ``name``."""
        source = Path(path)
        art_name = _artifacts.artifact_name(name or source.name or str(source))
        artifact = _artifacts.store_path(self.objects, source, name=art_name)
        self.record_artifact(run_id, artifact, role=role)
        return artifact

    def log_bytes(self, run_id: str, data: bytes, *, name: str) -> Artifact:
        art_name = _artifacts.artifact_name(name)
        with self.objects.batch():
            digest = self.objects.put_bytes(data)
        artifact = Artifact(art_name, digest, "file", len(data), None)
        self.record_artifact(run_id, artifact, role="artifact")
        return artifact

    def log_output(self, run_id: str, data: bytes) -> Digest:
        """Store captured stdout/stderr bytes; the caller records the digest in the capture."""
        with self.objects.batch():
            digest = self.objects.put_bytes(data)
        with self.meta.transaction() as conn:
            add_refs(conn, _owner(run_id), [(digest, "blob")])
        return digest

    def record_artifact(self, run_id: str, artifact: Artifact, *, role: str) -> None:
        with self.meta.transaction() as conn:
            self._require_open(conn, run_id)
            repo.add_artifact(conn, run_id, artifact, role=role, now=utcnow())
            add_refs(conn, _owner(run_id), [(artifact.digest, "tree" if artifact.kind == "tree" else "blob")])

    def update_capture(
        self, run_id: str, update: Mapping[str, Any], *, refs: Sequence[tuple[Digest, RefKind]] = ()
    ) -> None:
        """Merge ``update`` into the run's capture document (lists such as warnings are extended)."""
        with self.meta.transaction() as conn:
            _merge_capture(conn, run_id, update, refs)

    def add_inputs(self, run_id: str, inputs: Iterable[str]) -> None:
        new = self._check_inputs(inputs)
        with self.meta.transaction() as conn:
            self._require_open(conn, run_id)
            row = repo.run_row(conn, run_id)
            assert row is not None
            current = json.loads(row.inputs)
            merged = current + [r for r in new if r not in current]
            repo.update_run(conn, run_id, inputs=json.dumps(merged))

    def add_config(self, run_id: str, config: Iterable[str | os.PathLike[str]]) -> None:
        configs = self._read_configs(config, Path.cwd())
        entries = []
        refs: builtins.list[tuple[Digest, RefKind]] = []
        with self.objects.batch():
            for path, data in configs:
                digest = self.objects.put_bytes(data)
                entries.append({"path": path, "sha256": str(digest), "size": len(data)})
                refs.append((digest, "blob"))
        self.update_capture(run_id, {"config": entries}, refs=refs)

    def record_seed(self, run_id: str, report: Mapping[str, Any]) -> None:
        doc = {k: v for k, v in report.items() if k != "jax_key"}
        with self.meta.transaction() as conn:
            repo.update_run(conn, run_id, seed=int(report["seed"]))
        self.update_capture(run_id, {"seeds": doc})

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
            if git is not None:
                assert found is not None
                _merge_capture(conn, run_id, *git, current=found[1])
            repo.end_run(conn, run_id, status=status, ended_at=utcnow(), exit_code=exit_code, error=error)

    def resume(self, ref: str) -> Run:
        """Reopen a run that did not finish (running, failed or killed)."""
        run_id = self.resolve(ref)
        with self.meta.transaction() as conn:
            row = repo.run_row(conn, run_id)
            assert row is not None
            if row.status == "finished":
                raise Conflict(f"run:{run_id} finished; finished runs are never changed", hint="start a new run")
            if row.deleted_at is not None:
                raise Conflict(f"run:{run_id} is deleted", hint=f"labvault runs restore {run_id}")
            repo.update_run(conn, run_id, status="running", ended_at=None, exit_code=None, error=None)
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

    def compare(self, refs: Sequence[str]) -> dict[str, Any]:
        from labvault.services.tracking.export import compare_runs

        return compare_runs(self, [self.get(r) for r in refs])


def _default_name(argv: Sequence[str]) -> str:
    """The script or command name: ``train`` for ``python train.py``, ``make`` for ``make all``."""
    args = [a for a in argv[1:] if not a.startswith("-")] if argv and Path(argv[0]).name.startswith("python") else argv
    for arg in args:
        stem = Path(arg).stem
        if stem and stem not in ("-c", "-m"):
            return stem[:256]
    return "run"
