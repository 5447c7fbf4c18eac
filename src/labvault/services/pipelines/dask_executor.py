"""Stages on a ``dask.distributed`` cluster (``pipeline run --executor dask://HOST:PORT``).

Each :class:`StageJob` becomes one Dask task running :func:`~labvault.services.pipelines.remote_stage.run_stage_job`
on a worker: deps come from the object store, outputs go back to it, and the outcome carries their
digests, so nothing relies on a shared filesystem. The store travels as its location: a remote URL
(``s3://...``) works from any machine; a local vault folder only from this one, so a local store
with a scheduler or a worker elsewhere is refused up front (exit 2) instead of failing on every stage.

``distributed`` is the optional extra ``labvault[dask]``, imported only here and only when used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import secrets
import time
from concurrent.futures import Future
from typing import Any

from labvault.errors import ExternalError, ValidationError
from labvault.services.pipelines.executor import StageJob, StageOutcome
from labvault.services.pipelines.remote_stage import WRAPPER_ERROR, run_stage_job, stop_stages
from labvault.storage.objects.location import is_local_location, is_this_machine

__all__ = ["DaskExecutor", "scheduler_address"]

_STOPPED = -15  # what a stage stopped by cancel_all reports, as a process ended by SIGTERM


def scheduler_address(address: str) -> str:
    """``tcp://HOST:PORT`` for ``dask://HOST:PORT``, ``tcp://...``, ``tls://...`` or ``HOST:PORT``."""
    text = address.strip()
    if text.startswith("dask://"):
        text = "tcp://" + text.removeprefix("dask://")
    elif "://" not in text:
        text = "tcp://" + text
    scheme, _, rest = text.partition("://")
    host, sep, port = rest.rstrip("/").rpartition(":")
    if scheme not in ("tcp", "tls") or not sep or not host or not port.isdigit() or "/" in rest.rstrip("/"):
        raise ValidationError(
            f"not a Dask scheduler address: {address!r}", hint="give it as dask://HOST:PORT (e.g. dask://10.0.0.5:8786)"
        )
    return f"{scheme}://{host}:{port}"


def _host(address: str) -> str:
    return address.partition("://")[2].rpartition(":")[0].strip("[]")


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ExternalError(
            "the Dask executor needs the distributed package", hint="pip install 'labvault[dask]'"
        ) from exc
    return distributed


class DaskExecutor:
    """An :class:`~labvault.services.pipelines.executor.Executor` that sends stages to a Dask scheduler."""

    def __init__(
        self,
        address: str,
        store_location: str,
        *,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        scratch_dir: str | None = None,
    ) -> None:
        self.address = scheduler_address(address)
        self.store_location = store_location
        self.timeout = timeout  # for jobs that set none
        self.scratch_dir = scratch_dir
        self._local_store = is_local_location(store_location)
        if self._local_store and not is_this_machine(_host(self.address)):
            raise self._refusal(f"the Dask scheduler {address} is on another machine")
        distributed = _distributed()
        try:
            self.client = distributed.Client(self.address, timeout=connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ExternalError(
                f"cannot reach the Dask scheduler at {address}: {exc}",
                hint="check that `dask scheduler` runs there and that its port is open",
            ) from exc
        if self._local_store:
            workers = list(self.client.scheduler_info().get("workers", {}))
            elsewhere = [w for w in workers if not is_this_machine(_host(w))]
            if elsewhere:
                self.client.close()
                raise self._refusal(f"Dask workers run on other machines ({', '.join(elsewhere[:3])})")
        self.token = secrets.token_hex(8)
        self._count = itertools.count()
        self._pending: dict[str, Any] = {}
        self._stopped = False

    def _refusal(self, why: str) -> ValidationError:
        return ValidationError(
            f"the object store is a local folder ({self.store_location}) and {why}: they cannot read it",
            hint="use a vault whose object store is remote (s3://...), or a Dask cluster on this machine",
        )

    def submit(self, job: StageJob) -> Future[StageOutcome]:
        out: Future[StageOutcome] = Future()
        if self._stopped:
            now = time.time()
            out.set_result(StageOutcome(job.name, _STOPPED, {}, "labvault: cancelled before it started\n", now, now))
            return out
        if job.timeout is None and self.timeout is not None:
            job = dataclasses.replace(job, timeout=self.timeout)
        key = f"labvault-stage-{job.name}-{self.token}-{next(self._count)}"
        submitted = time.time()
        future = self.client.submit(
            run_stage_job,
            job,
            self.store_location,
            token=self.token,
            scratch_dir=self.scratch_dir,
            key=key,
            pure=False,
            retries=0,
        )
        self._pending[key] = future
        future.add_done_callback(lambda f: self._settle(f, job, out, submitted))
        return out

    def _settle(self, future: Any, job: StageJob, out: Future[StageOutcome], submitted: float) -> None:
        """Turn the Dask future's end into an outcome: a lost worker or a cancel is an outcome too."""
        self._pending.pop(future.key, None)
        if out.done():
            return
        now = time.time()
        try:
            if future.status == "finished":
                out.set_result(future.result())
            elif future.status == "cancelled":
                out.set_result(StageOutcome(job.name, _STOPPED, {}, "labvault: cancelled\n", submitted, now))
            else:
                exc = future.exception()
                log = f"labvault: error: the Dask task of stage {job.name} failed: {type(exc).__name__}: {exc}\n"
                out.set_result(StageOutcome(job.name, WRAPPER_ERROR, {}, log, submitted, now))
        except Exception as exc:  # the future's own failure (a lost connection) still settles the stage
            log = f"labvault: error: stage {job.name}: {type(exc).__name__}: {exc}\n"
            out.set_result(StageOutcome(job.name, WRAPPER_ERROR, {}, log, submitted, now))

    def cancel_all(self) -> None:
        """Start nothing new, drop what waits, and end the process groups of the running stages."""
        self._stopped = True
        pending = list(self._pending.values())
        if pending:
            self.client.cancel(pending, force=True)
        # A worker that cannot be reached now is skipped: its stage ends by its timeout.
        with contextlib.suppress(OSError, TimeoutError):
            self.client.run(stop_stages, self.token)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
