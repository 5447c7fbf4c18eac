"""What the benchmark scripts share beside their workloads: the anchors (MLflow, DVC), each installed
on first use into its own virtual environment under ``.bench/`` so that it never mixes with
labvault's dependencies; servers started on a free loopback port, waited for, and stopped; and the
percentile every latency table uses.

Only the standard library is imported at the top: lineage.py and registry.py run themselves again
inside MLflow's environment, where neither labvault nor httpx is installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
MLFLOW_VENV = BENCH / "mlflow"
DVC_VENV = BENCH / "dvc-venv"
DVC = DVC_VENV / "bin" / "dvc"
LABVAULT = str(Path(sys.executable).parent / "labvault")


def ensure_anchor(venv: Path, requirement: str, modules: str) -> Path:
    """The Python of ``venv``, where ``modules`` (``"dvc, s3fs"``) import; ``requirement`` is installed
    there with uv first when they do not."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", f"import {modules}"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    uv = shutil.which("uv")
    if uv is None:
        sys.exit(f"uv is needed to install {requirement} into {venv} (pip install uv)")
    BENCH.mkdir(exist_ok=True)
    (BENCH / ".gitignore").write_text("*\n")
    print(f"installing {requirement} into {venv} ...", file=sys.stderr, flush=True)
    subprocess.run([uv, "venv", "-q", "--allow-existing", "--python", sys.executable, str(venv)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--compile-bytecode", "--python", str(python), requirement], check=True)
    return python


def ensure_mlflow() -> Path:
    """MLflow's Python, in ``.bench/mlflow``; its ``mlflow`` command stands beside it."""
    return ensure_anchor(MLFLOW_VENV, "mlflow", "mlflow")


def ensure_dvc(*, s3: bool = False) -> Path:
    """The ``dvc`` command of ``.bench/dvc-venv``; with ``s3``, able to use S3 remotes (``dvc[s3]``)."""
    ensure_anchor(DVC_VENV, "dvc[s3]" if s3 else "dvc", "dvc, s3fs" if s3 else "dvc")
    return DVC


def clean_env() -> dict[str, str]:
    """This process's environment without ``LABVAULT_*``, so that a child finds only the vault it is given."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], limit: float = 120) -> None:
    """Return once ``url`` answers below 500; exit when ``proc`` dies first or ``limit`` seconds pass."""
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}) before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    sys.exit(f"no answer from {url} in {limit:.0f} s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Stop a server; when it leads a session of its own, every process it started too (workers, job
    consumers), which would otherwise outlive it."""

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()


def start_server(
    command: list[str],
    *,
    health: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    own_session: bool = False,
    limit: float = 120,
) -> tuple[subprocess.Popen[bytes], str]:
    """``command --port P`` on a free loopback port P, started in ``cwd`` and returned once its
    ``health`` path answers, with its base URL; stopped again when it does not start."""
    port = free_port()
    proc = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=own_session,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url + health, proc, limit)
    except BaseException:
        stop(proc)
        raise
    return proc, url


def start_mlflow_server(
    python: Path,
    root: Path,
    *,
    store: str | None = None,
    workers: int = 1,
    proxy_artifacts: bool = False,
    own_session: bool = False,
    limit: float = 120,
) -> tuple[subprocess.Popen[bytes], str]:
    """``mlflow server`` of the environment of ``python`` over ``store`` (by default a SQLite file in
    ``root``), artifacts in ``root/artifacts``. With ``proxy_artifacts`` clients up- and download
    artifacts through the server (``--artifacts-destination``), as a client on another machine must;
    without, they write that folder themselves (``--default-artifact-root``)."""
    command = [
        *(str(python.parent / "mlflow"), "server", "--backend-store-uri", store or f"sqlite:///{root / 'mlflow.db'}"),
        *("--artifacts-destination" if proxy_artifacts else "--default-artifact-root", str(root / "artifacts")),
        *("--host", "127.0.0.1", "--workers", str(workers)),
    ]
    return start_server(command, health="/health", cwd=root, own_session=own_session, limit=limit)


def start_labvault_server(
    root: Path,
    *,
    role: str = "writer",
    db: str | None = None,
    workers: int | None = None,
    own_session: bool = False,
    limit: float = 120,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """A new vault in ``root`` (its metadata in ``db`` when given), a token of ``role`` for it, and
    ``labvault server`` over it: the process, its base URL and the token."""
    env = clean_env()
    subprocess.run(
        [LABVAULT, "init", *(["--db", db] if db else [])], cwd=root, env=env, check=True, capture_output=True
    )
    token = subprocess.run(
        [LABVAULT, "server", "token", "create", "bench", "--role", role],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    command = [LABVAULT, "server", *(["--workers", str(workers)] if workers else [])]
    proc, url = start_server(command, health="/healthz", cwd=root, env=env, own_session=own_session, limit=limit)
    return proc, url, token


def percentile(xs: list[float], q: float) -> float:
    """The ``q`` quantile of ``xs`` (0.95: p95) by rank: ``xs[int(q * len(xs))]`` once sorted."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]
