"""Reading runs and logging to them: the part of the tracking service every open run calls.

:class:`RunRecords` is the base of :class:`~labvault.services.tracking.service.Tracking`; it holds
the stores and owns the metric appender of each thread.
"""

from __future__ import annotations

import builtins
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labvault.entities import Artifact, MetricPoint, Run, utcnow
from labvault.entities.access import ApiToken
from labvault.errors import AmbiguousReference, Conflict, NotFound, ValidationError
from labvault.refs import DataRef, Digest, parse_ref, validate_name
from labvault.services.capture.configs import read_configs
from labvault.services.tracking import artifacts as _artifacts
from labvault.services.tracking.envelopes import read_envelope
from labvault.services.tracking.filters import parse_filter, parse_sort
from labvault.services.tracking.liveness import process_gone
from labvault.services.tracking.names import parse_run_id, validate_key
from labvault.services.tracking.values import check_limit, check_text, encode_param, metric_step, metric_value
from labvault.storage.meta.repos import runs as repo
from labvault.storage.meta.repos.metric_appender import MetricAppender
from labvault.storage.meta.repos.object_refs import RefKind, add_refs
from labvault.storage.meta.repos.run_query import select_runs
from labvault.storage.meta.store import Connection, MetaStore
from labvault.storage.objects.protocol import ObjectStore

if TYPE_CHECKING:
    from labvault.services.tracking.batches import GatedPoints

__all__ = ["RunRecords", "merge_capture", "owner_of"]


def owner_of(run_id: str) -> str:
    return f"run:{run_id}"


def merge_capture(
    conn: Connection,
    run_id: str,
    update: Mapping[str, Any],
    refs: Sequence[tuple[Digest, RefKind]],
    *,
    current: str | None = None,
) -> None:
    if current is None:
        current = repo.capture_for_update(conn, run_id)
        if current is None:
            raise NotFound(f"no run run:{run_id}")
    doc = json.loads(current)
    for key, value in update.items():
        if isinstance(value, list) and isinstance(doc.get(key), list):
            doc[key] = doc[key] + value
        else:
            doc[key] = value
    repo.update_run(conn, run_id, capture=json.dumps(doc, sort_keys=True))
    add_refs(conn, owner_of(run_id), refs)


class RunRecords:
    """Reads runs, and appends params, metrics, tags, artifacts and capture details to them."""

    objects: ObjectStore
    meta: MetaStore
    _local: threading.local
    _keys: set[str]
    pin_input: Callable[[str], str] | None = None

    def _check_inputs(self, inputs: Iterable[str]) -> builtins.list[str]:
        """Parse input references; ``data:NAME`` without a version is pinned to its latest snapshot.

        A run must name the exact data it read, never a moving "latest", nor a version that does not exist.
        """
        if isinstance(inputs, str):
            inputs = [inputs]
        out = []
        for text in inputs:
            ref = parse_ref(text)
            if isinstance(ref, DataRef) and self.pin_input is not None:
                out.append(self.pin_input(str(ref)))
            else:
                out.append(str(ref))
        return out

    def _read_configs(self, config: Iterable[str | os.PathLike[str]], cwd: Path) -> builtins.list[tuple[str, bytes]]:
        return read_configs(config, cwd)

    def _check_tags(self, tags: Mapping[str, object]) -> dict[str, str]:
        return {validate_key(k, what="tag"): check_text(k, str(v), what="tag") for k, v in tags.items()}

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
        offset: int = 0,
    ) -> builtins.list[Run]:
        """Runs matching ``filter`` (the filter language of docs/tracking.md), newest first by default,
        skipping the first ``offset`` (a page of a table)."""
        if project:
            project = validate_name(project, what="project name")
        where = parse_filter(filter) if filter and filter.strip() else None
        order = parse_sort(sort) if sort else None
        if limit is not None:
            limit = check_limit(limit)
        if not isinstance(offset, int) or offset < 0:
            raise ValidationError(f"invalid offset {offset!r}", hint="give a whole number of runs to skip, 0 or more")
        with self.meta.read_driver() as driver:
            return select_runs(
                driver,
                sqlite=self.meta.is_sqlite,
                deleted=deleted,
                project=project,
                where=where,
                sort=order,
                limit=limit,
                offset=offset,
            )

    def history(self, ref: str, key: str | None = None) -> dict[str, builtins.list[MetricPoint]]:
        run_id = self.resolve(ref)
        with self.meta.read() as conn:
            return repo.metric_history(conn, run_id, key)

    def history_envelope(self, ref: str, *, buckets: int = 1000) -> dict[str, builtins.list[tuple[int, float | None]]]:
        """Each metric's ``(step, value)`` points for a chart, at most about ``2 * buckets``: a longer
        history becomes each step range's minimum and maximum, computed by the database (a finished
        run's stored when it ended: services/tracking/envelopes.py)."""
        run_id = self.resolve(ref)
        return read_envelope(self.meta, run_id, buckets=max(1, min(buckets, 100_000)))

    def process_gone(self, *, status: str, pid: object, host: str | None) -> bool:
        """True when a running run's process on this host no longer exists (SIGKILL, crash)."""
        return process_gone(status=status, pid=pid, host=host)

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
            rows.append((run_id, key, metric_step(key, step), stamp, metric_value(key, value)))
        self._appender().append(rows)

    def log_batch(
        self,
        run_id: str,
        *,
        params: Mapping[str, object],
        tags: Mapping[str, object],
        points: Sequence[tuple[str, object, int]],
        once: tuple[str, str | None],
    ) -> Any:
        """Params, tags and metric points in one transaction, with the request's idempotency key
        (``once``: scope and key, or None) recorded in it; see :mod:`.batches`."""
        from labvault.services.tracking.batches import log_batch

        return log_batch(self, run_id, params=params, tags=tags, points=points, once=once)

    def gate_points(
        self,
        run_id: str,
        points: Sequence[tuple[str, object, int]],
        *,
        token_id: str,
        authorize: Callable[[tuple[ApiToken, str, str] | None], None],
    ) -> GatedPoints:
        """Points for the holder of a token, to append behind a check of both; see :mod:`.batches`."""
        from labvault.services.tracking.batches import gate_points

        return gate_points(self, run_id, points, token_id=token_id, authorize=authorize)

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
            add_refs(conn, owner_of(run_id), [(digest, "blob")])
        return digest

    def record_artifact(self, run_id: str, artifact: Artifact, *, role: str) -> None:
        with self.meta.transaction() as conn:
            self._require_open(conn, run_id)
            repo.add_artifact(conn, run_id, artifact, role=role, now=utcnow())
            add_refs(conn, owner_of(run_id), [(artifact.digest, "tree" if artifact.kind == "tree" else "blob")])

    def update_capture(
        self, run_id: str, update: Mapping[str, Any], *, refs: Sequence[tuple[Digest, RefKind]] = ()
    ) -> None:
        """Merge ``update`` into the run's capture document (lists such as warnings are extended)."""
        with self.meta.transaction() as conn:
            merge_capture(conn, run_id, update, refs)

    def add_inputs(self, run_id: str, inputs: Iterable[str]) -> None:
        new = self._check_inputs(inputs)
        with self.meta.transaction() as conn:
            self._require_open(conn, run_id)
            row = repo.run_row(conn, run_id)
            if row is None:  # _require_open found it in this same transaction
                raise NotFound(f"no run {run_id}", hint="list runs with `labvault runs list`")
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
