"""The run handle users hold: ``with lv.start_run(...) as run: run.log_metric(...)``."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any

from labvault.entities import Artifact, Run, RunStatus
from labvault.errors import ValidationError
from labvault.services.tracking.values import metric_step, metric_value

if TYPE_CHECKING:
    # Only a type here: the client's ServerActiveRun is this class over HTTP, and importing the
    # service would load the metadata layer (SQLAlchemy) into every process that works through a server.
    from labvault.services.tracking.service import Tracking

__all__ = ["ActiveRun", "RunKilled"]

_TEE_LIMIT = 64 * 1024 * 1024  # bytes of stdout/stderr kept per stream; the rest is counted, not stored


class RunKilled(BaseException):
    """Raised in the main thread by SIGTERM while a run is open, so that the run is marked killed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


class _Tee(io.TextIOBase):
    """Writes through to the real stream and keeps a copy (Python-level writes only)."""

    def __init__(self, target: IO[str], sink: IO[bytes]) -> None:
        self._target = target
        self._sink = sink
        self.kept = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        n = self._target.write(s)
        data = s.encode("utf-8", errors="replace")
        with self._lock:
            room = _TEE_LIMIT - self.kept
            self._sink.write(data[:room])
            self.kept += min(room, len(data))
            self.dropped += max(0, len(data) - room)
        return n

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")

    @property
    def target(self) -> IO[str]:
        return self._target


class ActiveRun:
    """An open run. Leaving the ``with`` block ends it: finished, failed (an exception) or killed.

    A handle that *attached* to a run someone else owns (``labvault run`` around this process, or
    a resumed run with ``owned=False``) logs to it but never ends it.
    """

    def __init__(
        self,
        service: Tracking,
        run: Run,
        *,
        owned: bool = True,
        resumed: bool = False,
        on_close: Callable[[ActiveRun], None] | None = None,
        capture_output: bool = False,
    ) -> None:
        self._service = service
        self.id = run.id
        self.owned = owned
        self._on_close = on_close
        self._lock = threading.Lock()
        self._next_step: dict[str, int] | None = None if resumed or not owned else {}
        self._closed = False
        self._old_sigterm: Any = None
        self._tees: list[tuple[str, _Tee, IO[bytes]]] = []
        if capture_output:
            self._start_tee()

    # -- identity -------------------------------------------------------------------------------
    @property
    def ref(self) -> str:
        return f"run:{self.id}"

    @property
    def info(self) -> Run:
        """The run as stored now."""
        return self._service.get(self.id)

    def __repr__(self) -> str:
        return f"<ActiveRun {self.ref}{'' if self.owned else ' (attached)'}>"

    # -- logging --------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValidationError(f"{self.ref} was ended; it accepts no more logging", hint="start a new run")

    def log_param(self, key: str, value: object) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, object]) -> None:
        self._check_open()
        self._service.log_params(self.id, params)

    def set_tag(self, key: str, value: object) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, object]) -> None:
        self._check_open()
        self._service.set_tags(self.id, tags)

    def _steps_for(self, keys: list[str], step: int | None) -> list[int]:
        with self._lock:
            if self._next_step is None:
                self._next_step = {k: v + 1 for k, v in self._service.max_steps(self.id).items()}
            if step is not None:
                for k in keys:
                    self._next_step[k] = max(self._next_step.get(k, 0), step + 1)
                return [step] * len(keys)
            out = []
            for k in keys:
                n = self._next_step.get(k, 0)
                self._next_step[k] = n + 1
                out.append(n)
            return out

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Append one point; ``step`` defaults to one past this key's last step. Durable on return."""
        self._check_open()
        # Checked before the step counter moves: a refused point leaves no gap in the steps.
        number = metric_value(key, value)
        (s,) = self._steps_for([key], None if step is None else metric_step(key, step))
        self._service.log_metrics(self.id, [(key, number, s)])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Append many points in one transaction."""
        self._check_open()
        numbers = {k: metric_value(k, v) for k, v in metrics.items()}
        keys = list(numbers)
        steps = self._steps_for(keys, None if step is None or not keys else metric_step(keys[0], step))
        self._service.log_metrics(self.id, [(k, numbers[k], s) for k, s in zip(keys, steps, strict=True)])

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> Artifact:
        """Store a file or a folder (content-addressed) under ``name`` (default: its base name)."""
        self._check_open()
        return self._service.log_artifact(self.id, path, name=name)

    def log_text(self, text: str, name: str) -> Artifact:
        self._check_open()
        return self._service.log_bytes(self.id, text.encode("utf-8"), name=name)

    def log_dict(self, data: Mapping[str, Any], name: str) -> Artifact:
        """JSON, or YAML when ``name`` ends in .yaml/.yml; keys sorted so equal dicts store once."""
        self._check_open()
        if name.endswith((".yaml", ".yml")):
            import yaml

            text = yaml.safe_dump(dict(data), sort_keys=True, allow_unicode=True)
        else:
            text = json.dumps(data, sort_keys=True, indent=2, default=str) + "\n"
        return self._service.log_bytes(self.id, text.encode("utf-8"), name=name)

    def log_figure(self, figure: Any, name: str) -> Artifact:
        """A matplotlib figure (saved as PNG unless ``name`` says another format), PNG bytes, or a path."""
        self._check_open()
        if isinstance(figure, bytes | bytearray):
            data = bytes(figure)
        elif isinstance(figure, str | os.PathLike):
            data = Path(figure).read_bytes()
        elif hasattr(figure, "savefig"):
            buf = io.BytesIO()
            fmt = Path(name).suffix.lstrip(".") or "png"
            figure.savefig(buf, format=fmt)
            data = buf.getvalue()
        else:
            raise ValidationError(
                f"cannot log a {type(figure).__name__} as a figure",
                hint="pass a matplotlib figure, PNG bytes or the path of an image",
            )
        return self._service.log_bytes(self.id, data, name=name)

    def log_input(self, *refs: str) -> None:
        """Record data references (``data:name@v3``) this run read."""
        self._check_open()
        self._service.add_inputs(self.id, refs)

    # -- output capture and signals -------------------------------------------------------------
    def _start_tee(self) -> None:
        for stream in ("stdout", "stderr"):
            sink = tempfile.TemporaryFile(prefix=f"labvault-{stream}-")  # noqa: SIM115 - closed by _stop_tee
            tee = _Tee(getattr(sys, stream), sink)
            setattr(sys, stream, tee)
            self._tees.append((stream, tee, sink))

    def _stop_tee(self) -> None:
        update: dict[str, Any] = {}
        tees, self._tees = self._tees, []
        for stream, tee, _ in tees:  # every stream back first: an upload that fails leaves none teed
            if getattr(sys, stream) is tee:
                setattr(sys, stream, tee.target)
        try:
            for stream, tee, sink in tees:
                sink.seek(0)
                data = sink.read()
                if data:
                    update[stream] = str(self._service.log_output(self.id, data))
                if tee.dropped:
                    update.setdefault("warnings", []).append(
                        f"{stream}: {tee.dropped} bytes past the first {_TEE_LIMIT} were not kept"
                    )
        finally:
            for _, _, sink in tees:
                sink.close()
        if update:
            self._service.update_capture(self.id, update)

    def install_signal_handlers(self) -> None:
        """Turn SIGTERM into :class:`RunKilled` in the main thread (SIGINT already raises)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # the program handles SIGTERM itself

        def _raise(signum: int, frame: FrameType | None) -> None:
            raise RunKilled(signum)

        self._old_sigterm = signal.signal(signal.SIGTERM, _raise)

    def _restore_signal_handlers(self) -> None:
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # -- ending ---------------------------------------------------------------------------------
    def end(self, status: RunStatus = "finished", *, error: str | None = None, exit_code: int | None = None) -> None:
        """End the run (a no-op for an attached handle, which only stops logging)."""
        if self._closed:
            return
        try:
            if self._tees:
                self._stop_tee()
            if self.owned:
                self._service.finish(self.id, status=status, error=error, exit_code=exit_code)
        finally:
            self._service.close()
            self._closed = True
            self._restore_signal_handlers()
            if self._on_close is not None:
                self._on_close(self)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.end("finished", exit_code=0)
        elif isinstance(exc, KeyboardInterrupt | RunKilled):
            signum = exc.signum if isinstance(exc, RunKilled) else signal.SIGINT
            self.end("killed", error=f"killed by {signal.Signals(signum).name}", exit_code=128 + signum)
            if isinstance(exc, RunKilled):
                # Die of the signal as the program would have without us, now that the run is recorded.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                sys.stdout.flush()
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
        else:
            message = f"{type(exc).__name__}: {exc}"
            self.end("failed", error=message[:4000], exit_code=1)
