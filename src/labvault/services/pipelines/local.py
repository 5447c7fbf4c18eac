"""The local executor: each stage's command in its own process group, in the project folder.

``sh -c CMD`` starts in a new session, so Ctrl-C at the terminal reaches labvault only, which stops
every stage's whole group (SIGTERM, then SIGKILL after a grace period) through :meth:`cancel_all`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from labvault.services.pipelines.executor import StageJob, StageOutcome

__all__ = ["LocalExecutor"]

_LOG_TAIL = 64 * 1024
_GRACE_S = 5.0


class LocalExecutor:
    def __init__(self, root: Path, *, jobs: int) -> None:
        self.root = root
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="stage")
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def submit(self, job: StageJob) -> Future[StageOutcome]:
        return self._pool.submit(self._run, job)

    def _run(self, job: StageJob) -> StageOutcome:
        started = time.time()
        with self._lock:
            if self._stopped:
                return StageOutcome(
                    job.name, -signal.SIGTERM, {}, "not started: the pipeline was stopped", started, started
                )
            env = {**os.environ, **job.env}
            try:
                proc = subprocess.Popen(
                    ["sh", "-c", job.cmd],
                    cwd=self.root / job.wdir,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                )
            except OSError as exc:
                return StageOutcome(job.name, 127, {}, f"cannot start sh: {exc}", started, time.time())
            self._procs[job.name] = proc
        tail = bytearray()
        if proc.stdout is not None:  # always: stdout=PIPE
            fd = proc.stdout.fileno()
            while chunk := os.read(fd, 65536):
                tail += chunk
                if len(tail) > 2 * _LOG_TAIL:
                    del tail[: len(tail) - _LOG_TAIL]
            proc.stdout.close()
        code = proc.wait()
        with self._lock:
            self._procs.pop(job.name, None)
        ended = time.time()
        log = bytes(tail[-_LOG_TAIL:]).decode("utf-8", "replace")
        missing = tuple(o for o in job.outs if not os.path.lexists(self.root / o)) if code == 0 else ()
        return StageOutcome(job.name, code, {}, log, started, ended, missing_outs=missing)

    def cancel_all(self) -> None:
        with self._lock:
            self._stopped = True
            procs = list(self._procs.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + _GRACE_S
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
