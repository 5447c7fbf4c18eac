"""A real Dask cluster on loopback for the tests: ``dask scheduler`` and two ``dask worker`` processes.

Started once per session by the ``dask_cluster`` fixture (tests/conftest.py) and stopped at its end,
each process in its own session so that stopping it ends everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_BIN = Path(sys.executable).parent


class DaskCluster:
    def __init__(self, folder: Path, *, workers: int = 2) -> None:
        self.folder = folder
        self.workers = workers
        self.procs: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def _spawn(self, *args: str, log: str) -> None:
        env = {
            **os.environ,
            "PATH": f"{_BIN}:{os.environ.get('PATH', '')}",
            "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "warning",
        }
        with open(self.folder / log, "wb") as out:
            proc = subprocess.Popen(
                [str(_BIN / "dask"), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
                start_new_session=True,
            )
        self.procs.append(proc)

    def start(self, timeout: float = 60) -> DaskCluster:
        info = self.folder / "scheduler.json"
        common = ("--dashboard-address", ":0")
        self._spawn(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--scheduler-file",
            str(info),
            *common,
            log="scheduler.log",
        )
        deadline = time.monotonic() + timeout
        while not info.exists() or not info.read_text().strip():
            self._check(deadline)
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written whole, but give the writer its close
        self.address = json.loads(info.read_text())["address"]
        for i in range(self.workers):
            self._spawn(
                "worker",
                self.address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "2",
                "--no-nanny",
                "--name",
                f"w{i}",
                *common,
                log=f"worker{i}.log",
            )
        from distributed import Client

        with Client(self.address, timeout=timeout, set_as_default=False) as client:
            client.wait_for_workers(self.workers, timeout=timeout)
        return self

    def _check(self, deadline: float) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a dask process exited early; see {self.folder}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the dask cluster did not start; see {self.folder}")

    def stop(self) -> None:
        for proc in reversed(self.procs):  # workers first: a worker whose scheduler went waits to reconnect
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def dask_url(self) -> str:
        """The address as ``pipeline run --executor`` takes it."""
        return "dask://" + self.address.removeprefix("tcp://")
