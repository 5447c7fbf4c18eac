"""Tracking through a server: runs are created and ended over HTTP, everything logged in between
goes into a local spool (:mod:`labvault.client.spool`) and a background thread sends it.

The training loop never waits on the network: ``log_metric`` returns once its record is written to
the spool file. The sender posts batches (``POST /runs/{id}/log``, an Idempotency-Key per batch) at
least every second, retries with backoff while the server is away, and removes the spool once the
server has it all. ``flush()`` returns when the server has everything logged before it; ``end()``
flushes, then ends the run. A spool left by a process that died is sent by ``labvault sync``, or in
the background by the next process that tracks a run through the same server.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from hashlib import sha256
from pathlib import Path
from typing import Any, cast

from labvault.client import decode
from labvault.client.run_capture import capture_run, read_configs, upload_configs
from labvault.client.sender import Sender
from labvault.client.settings import spool_dir
from labvault.client.spool import SpoolWriter, server_folder
from labvault.client.transport import Transport
from labvault.entities import Artifact, Run
from labvault.errors import Conflict, ExternalError, LabvaultError
from labvault.refs import Digest
from labvault.services.tracking.artifacts import artifact_name, store_path
from labvault.services.tracking.handle import ActiveRun
from labvault.services.tracking.names import default_run_name, validate_key
from labvault.services.tracking.values import check_text, encode_param, metric_step, metric_value

__all__ = ["ServerActiveRun", "TrackingWrites", "decode_run"]

END_WAIT = 120.0  # seconds end() waits for the server before leaving the rest to `labvault sync`
EXIT_WAIT = 10.0  # the same, for a run killed by a signal or left open when the process exits


class _Channel:
    """One run's spool, its sender, and what this process already logged to it."""

    def __init__(self, owner: Any, run_id: str, *, owned: bool) -> None:
        url = owner.url
        self.folder = server_folder(spool_dir(), url)
        self.writer = SpoolWriter(self.folder, url=url, run_id=run_id, owned=owned)
        self.transport = Transport(owner.target, timeout=30.0)
        self.sender = Sender(self.writer, self.transport, self.folder)
        self.sender.start()
        self.owned = owned
        self.params: dict[str, str] = {}

    def flush(self, timeout: float | None) -> bool:
        return self.sender.flush(timeout)

    def close(self, *, wait: float) -> bool:
        """Flush for up to ``wait`` seconds, stop the sender, release the spool. True when all was sent."""
        try:
            sent = self.flush(wait)
        finally:
            self.sender.stop()
            self.writer.close()
            self.transport.close()
        if sent:
            self.sender.reader.remove()
        return sent


# -- what vault.runs offers through a server -----------------------------------------------------
class TrackingWrites:
    """The write side of runs through a server (create, log, end); :class:`ServerRuns` inherits it.

    Method names and arguments follow the local ``Tracking`` service where :class:`ActiveRun` calls
    them, so the same handle works on both; ``log_*`` go to the run's spool.
    """

    owner: Any

    def _channels(self) -> dict[str, _Channel]:
        found: dict[str, _Channel] | None = self.__dict__.get("_open_channels")
        if found is None:
            found = self.__dict__["_open_channels"] = {}
        return found

    def _channel(self, run_id: str, *, owned: bool = False) -> _Channel:
        channels = self._channels()
        channel = channels.get(run_id)
        if channel is None:
            if not channels and not self.__dict__.get("_exit_hook"):
                self.__dict__["_exit_hook"] = True
                atexit.register(self._at_exit)
            channel = channels[run_id] = _Channel(self.owner, run_id, owned=owned)
        return channel

    def _at_exit(self) -> None:
        """A process that exits with runs still open: a run it owns ends as killed (as a local
        vault records a run whose process is gone); what is spooled is sent for a few seconds, and
        whatever the server has not taken by then stays for `labvault sync`."""
        for run_id, channel in list(self._channels().items()):
            if channel.owned:
                channel.writer.append_end("killed", None, "the process exited without ending the run")
            with contextlib.suppress(LabvaultError, OSError):
                self._release(run_id, wait=EXIT_WAIT)

    # -- runs -----------------------------------------------------------------------------------
    def create(
        self,
        *,
        project: str | None = None,
        name: str | None = None,
        parent_id: str | None = None,
        inputs: Iterable[str] = (),
        config: Iterable[str | os.PathLike[str]] = (),
        tags: Mapping[str, object] | None = None,
        seed: int | None = None,
        params: Mapping[str, object] | None = None,
        command: Sequence[str] | None = None,
        cwd: Path | None = None,
        capture: bool = False,
        **_local_only: Any,
    ) -> Run:
        """Create a running run on the server (this waits for it: the run's id comes from there).

        With ``capture`` (``labvault run``, ``start_run``), the code, environment and ``config``
        files are captured here, as a local vault captures them, uploaded, and recorded with the
        run. The run records this host and process, whose liveness a reader here can then judge.
        """
        argv = (list(command) if command else [sys.executable, *sys.argv])[:1000]
        captured: dict[str, Any] | None = None
        if capture:
            here = cwd or Path.cwd()
            configs = read_configs(config, here)  # a missing file is refused before the run exists
            captured = capture_run(self.owner.objects, root=self.owner.root, cwd=here, configs=configs)
        body: dict[str, Any] = {
            "project": project,
            "name": name or default_run_name(argv),
            "parent": parent_id,
            "inputs": list(inputs),
            "seed": seed,
            "tags": _tags(tags or {}),
            "params": {k: _plain(v) for k, v in _params(params or {}).items()},
            "command": argv,
            **_origin(),
        }
        run = decode_run(self.owner.transport.request("POST", "/runs", json=body))
        if params:
            self._channel(run.id, owned=True).params.update(_params(params))
        if captured is not None:
            try:
                self.update_capture(run.id, captured)
            except LabvaultError as exc:  # as a local run whose capture failed: none left running
                with contextlib.suppress(LabvaultError):
                    self.owner.transport.request(
                        "POST", f"/runs/{run.id}/end", json={"status": "failed", "error": f"capture: {exc}"[:10_000]}
                    )
                raise
        return run

    def get(self, ref: str) -> Run:
        """The run as the server has it now (the read side, ``ServerRuns``, may decode more of it)."""
        return decode_run(self.owner.transport.request("GET", f"/runs/{ref}"))

    def resume(self, ref: str) -> Run:
        """Reopen the run on the server; this process becomes the run's (its host and pid are sent)."""
        return decode_run(self.owner.transport.request("POST", f"/runs/{ref}/resume", json=_origin()))

    def open_run(
        self, run: Run, *, owned: bool, resumed: bool = False, capture_output: bool = False
    ) -> ServerActiveRun:
        """The handle of ``run`` (created, resumed or attached to), with its spool and sender."""
        channel = self._channel(run.id, owned=owned)
        handle = ServerActiveRun(cast(Any, self), run, owned=owned, resumed=resumed, capture_output=capture_output)
        handle._writer = channel.writer
        return handle

    def finish(
        self, run_id: str, *, status: str = "finished", error: str | None = None, exit_code: int | None = None
    ) -> None:
        """Spool the end, then wait (up to END_WAIT s) for the server to hold it all."""
        channel = self._channel(run_id, owned=True)
        channel.writer.append_end(status, exit_code, None if error is None else error[:10_000])
        # A run killed by a signal is in its grace period (SIGTERM): wait less before leaving the rest.
        self._release(run_id, wait=EXIT_WAIT if status == "killed" else END_WAIT)

    def _release(self, run_id: str, *, wait: float) -> None:
        channel = self._channels().pop(run_id, None)
        if channel is None:
            return
        if not channel.close(wait=wait):
            reason = channel.sender.failure or channel.sender.last_error
            sys.stderr.write(
                f"warning: the server has not acknowledged everything run:{run_id} logged"
                + (f" ({reason})" if reason else "")
                + "; it stays in the spool: run `labvault sync`\n"
            )
            if channel.sender.failure is not None:
                raise channel.sender.failure

    def detach(self, run_id: str) -> None:
        """Stop logging to a run this process does not own: send what is spooled, leave it running."""
        self._release(run_id, wait=END_WAIT)

    def flush(self, run_id: str, timeout: float | None = None) -> None:
        channel = self._channels().get(run_id)
        if channel is not None and not channel.flush(timeout):
            raise ExternalError(
                f"the server at {self.owner.url} has not acknowledged everything run:{run_id} logged",
                hint="it stays in the spool and is sent when the server is back (or by `labvault sync`)",
            )

    def close(self) -> None:
        """Nothing to release per call (a run's spool is released when it ends)."""

    # -- logging (spooled) -----------------------------------------------------------------------
    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        encoded = _params(params)
        channel = self._channel(run_id)
        for key, value in encoded.items():
            old = channel.params.get(key)
            if old is not None and old != value:
                raise Conflict(
                    f"param {key!r} of run:{run_id} is already {old}",
                    hint="params are immutable: log the new value under another key, or start a new run",
                )
        channel.params.update(encoded)
        channel.writer.append_params({k: _plain(v) for k, v in encoded.items()})

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        self._channel(run_id).writer.append_tags(_tags(tags))

    def log_metrics(self, run_id: str, points: Sequence[tuple[str, object, int]], **_: Any) -> None:
        self._channel(run_id).writer.append_metrics(cast(Sequence[tuple[str, float, int]], points))

    def max_steps(self, run_id: str) -> dict[str, int]:
        history = self.owner.transport.request("GET", f"/runs/{run_id}/history")
        out: dict[str, int] = {}
        if isinstance(history, dict):
            for key, points in history.items():
                steps = [p.get("step") for p in points if isinstance(p, dict)] if isinstance(points, list) else []
                ints = [s for s in steps if isinstance(s, int)]
                if ints:
                    out[str(key)] = max(ints)
        return out

    # -- artifacts and inputs (sent at once) ---------------------------------------------------------
    def log_artifact(self, run_id: str, path: str | os.PathLike[str], *, name: str | None = None) -> Artifact:
        """A file or a folder, uploaded as ``data add`` uploads (small objects in batches, big files in
        chunks, only what the server lacks), then recorded on the run."""
        source = Path(path)
        stored = store_path(self.owner.objects, source, name=artifact_name(name or source.name or str(source)))
        return self._record(run_id, stored, role="artifact")

    def log_bytes(self, run_id: str, data: bytes, *, name: str) -> Artifact:
        hexdigest = sha256(data).hexdigest()
        digest = "sha256:" + hexdigest
        transport = self.owner.transport
        transport.request("PUT", f"/objects/{digest}", content=data)
        doc = transport.request("POST", f"/runs/{run_id}/artifacts", json={"name": name, "digest": digest})
        return Artifact(str(doc.get("name", name)), Digest(hexdigest), "file", len(data), None)

    def add_config(self, run_id: str, config: Iterable[str | os.PathLike[str]]) -> None:
        """Config files' bytes, uploaded and recorded in the run's capture, as a local vault records them."""
        configs = read_configs(config, Path.cwd())
        with self.owner.objects.batch():
            entries = upload_configs(self.owner.objects, configs)
        self.update_capture(run_id, {"config": entries})

    def add_inputs(self, run_id: str, refs: Iterable[str]) -> None:
        self.owner.transport.request("POST", f"/runs/{run_id}/inputs", json={"inputs": list(refs)})

    def record_seed(self, run_id: str, report: Mapping[str, Any]) -> None:
        """What was seeded (``seed_everything``'s report), recorded as a local vault records it."""
        self.update_capture(run_id, {"seeds": {k: v for k, v in report.items() if k != "jax_key"}})

    # -- what `labvault run` records besides (services/tracking/wrapper.py) ---------------------------
    @property
    def objects(self) -> Any:
        """The server's objects, for the wrapper's declared outputs (uploaded in batches)."""
        return self.owner.objects

    def update_capture(self, run_id: str, update: Mapping[str, Any]) -> None:
        """Merge what was captured here into the run's capture document (its objects uploaded first)."""
        self.owner.transport.request("POST", f"/runs/{run_id}/capture", json=dict(update))

    def log_output(self, run_id: str, data: bytes) -> Digest:
        """Upload captured stdout/stderr bytes; :meth:`update_capture` records the digest with the run."""
        with self.owner.objects.batch():
            digest: Digest = self.owner.objects.put_bytes(data)
        return digest

    def record_artifact(self, run_id: str, artifact: Artifact, *, role: str) -> None:
        """Record a file or folder whose objects are uploaded (``store_path`` on the server's objects)."""
        self._record(run_id, artifact, role=role)

    def _record(self, run_id: str, artifact: Artifact, *, role: str) -> Artifact:
        body = {
            "name": artifact.name,
            "digest": str(artifact.digest),
            "kind": artifact.kind,
            "role": role,
            "path": artifact.path,
        }
        return decode.artifact(self.owner.transport.request("POST", f"/runs/{run_id}/artifacts", json=body))


class ServerActiveRun(ActiveRun):
    """:class:`ActiveRun` through a server, plus :meth:`flush`."""

    _writer: SpoolWriter

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Append one point to the spool (sent in the background); on the OS's disk when this returns."""
        # The hot path of a training loop: checks are inlined where the common case allows.
        if self._closed:
            self._check_open()
        number = value if type(value) is float else metric_value(key, value)
        steps = self._next_step
        if step is None and steps is not None:  # _steps_for's common case, without its lists
            with self._lock:
                s = steps.get(key, 0)
                steps[key] = s + 1
        else:
            (s,) = self._steps_for([key], None if step is None else metric_step(key, step))
        self._writer.append_metric(key, number, s)

    def _stop_tee(self) -> None:
        """Upload the captured stdout/stderr; a server away at the end costs them, not the run's end."""
        try:
            super()._stop_tee()
        except LabvaultError as exc:
            sys.stderr.write(f"warning: {self.ref}'s stdout/stderr were not recorded: {exc}\n")

    def flush(self, timeout: float | None = None) -> None:
        """Return when the server holds everything this handle logged (ExternalError on timeout)."""
        cast(TrackingWrites, self._service).flush(self.id, timeout)

    def end(self, status: Any = "finished", *, error: str | None = None, exit_code: int | None = None) -> None:
        if not self._closed and not self.owned:
            cast(TrackingWrites, self._service).detach(self.id)
        super().end(status, error=error, exit_code=exit_code)


# -- values ------------------------------------------------------------------------------------------
def _params(params: Mapping[str, object]) -> dict[str, str]:
    """Validated as the server will (a bad value fails here, not in a batch); the stored JSON text."""
    return {validate_key(k, what="param"): encode_param(k, v)[0] for k, v in params.items()}


def _origin() -> dict[str, Any]:
    """This process, as the server records a run's: a reader on this host can tell when it is gone.
    A host name the server would refuse (empty, too long, spaces) is not sent: no known process."""
    host = socket.gethostname()
    if not host or len(host) > 256 or any(ord(c) <= 32 or ord(c) == 127 for c in host):
        return {}
    return {"host": host, "pid": os.getpid()}


def _plain(stored: str) -> Any:
    return json.loads(stored)


def _tags(tags: Mapping[str, object]) -> dict[str, str]:
    return {validate_key(k, what="tag"): check_text(k, str(v), what="tag") for k, v in tags.items()}


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def decode_run(doc: Any) -> Run:
    """A run as the server encodes it (``server/encode.py``), validated: it is read back from the network."""
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not isinstance(doc.get("status"), str):
        raise ExternalError("the server answered with something that is not a run", hint="is it a labvault server?")
    started = _time(doc.get("started_at"))
    found = doc.get("metrics")
    metrics: dict[str, Any] = found if isinstance(found, dict) else {}
    return Run(
        id=doc["id"],
        project=str(doc.get("project", "")),
        name=str(doc.get("name", "")),
        status=doc["status"],
        started_at=started if started is not None else datetime.fromtimestamp(0).astimezone(),
        ended_at=_time(doc.get("ended_at")),
        params=dict(doc["params"]) if isinstance(doc.get("params"), dict) else {},
        metrics={str(k): float(v) if isinstance(v, int | float) else math.nan for k, v in metrics.items()},
        tags={str(k): str(v) for k, v in doc["tags"].items()} if isinstance(doc.get("tags"), dict) else {},
        inputs=tuple(x for x in doc.get("inputs") or () if isinstance(x, str)),
        parent_id=doc.get("parent_id") if isinstance(doc.get("parent_id"), str) else None,
        user=str(doc.get("user", "")),
        host=str(doc.get("host", "")),
        exit_code=doc.get("exit_code") if isinstance(doc.get("exit_code"), int) else None,
        error=doc.get("error") if isinstance(doc.get("error"), str) else None,
        seed=doc.get("seed") if isinstance(doc.get("seed"), int) else None,
    )
