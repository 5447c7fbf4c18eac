"""``labvault run -- CMD``: run any command as a tracked run, with zero change to its code.

The command runs in its own process group with ``LABVAULT_RUN_ID`` and ``LABVAULT_DIR`` exported
(and ``LABVAULT_SEED`` + ``PYTHONHASHSEED`` with a seed), so ``lv.start_run()`` inside it attaches
to this run. Its stdout and stderr are streamed through while being recorded; SIGINT, SIGTERM and
SIGHUP sent to the wrapper are forwarded to it once. After it exits, the declared outputs are stored,
and the run ends with the command's exit code.

Through a server ``service`` is the client's (``client/tracking.py``): the capture happens on this
machine, objects are uploaded, and ``LABVAULT_DIR`` is not exported (the command reaches the same
server the same way, through ``LABVAULT_URI`` or the stored login).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, cast

from labvault.entities import Run, RunStatus
from labvault.errors import LabvaultError, ValidationError
from labvault.services.tracking.artifacts import artifact_name, store_path
from labvault.services.tracking.service import Tracking
from labvault.services.tracking.values import check_seed

__all__ = ["EXIT_NOT_EXECUTABLE", "EXIT_NOT_FOUND", "EXIT_WRAPPER", "WrappedResult", "run_command"]

EXIT_WRAPPER = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class WrappedResult:
    run: Run
    exit_code: int
    missing_outputs: tuple[str, ...]


def _pump(src: IO[bytes], dest: IO[bytes], sink: IO[bytes]) -> None:
    fd = src.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        sink.write(chunk)
        try:
            dest.write(chunk)
            dest.flush()
        except (BrokenPipeError, ValueError):
            pass  # our reader went away: keep recording what the command writes


def _output_name(given: str, cwd: Path) -> str:
    """An output's artifact name: its path relative to the working directory, else its base name."""
    path = Path(given)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(cwd.resolve())
        except ValueError:
            path = Path(path.name)
    return artifact_name(str(path))


def _resolve(command: str, cwd: Path) -> tuple[str | None, int | None]:
    """The executable to run, or the wrapper exit code (126/127) when there is none."""
    if "/" in command:
        path = Path(command) if Path(command).is_absolute() else cwd / command
        if not path.exists():
            return None, EXIT_NOT_FOUND
        if path.is_dir() or not os.access(path, os.X_OK):
            return None, EXIT_NOT_EXECUTABLE
        return str(path), None
    found = shutil.which(command)
    return (found, None) if found else (None, EXIT_NOT_FOUND)


def run_command(
    service: Tracking,
    argv: Sequence[str],
    *,
    vault_dir: Path | None,
    project: str | None = None,
    name: str | None = None,
    config: Sequence[str] = (),
    inputs: Sequence[str] = (),
    outputs: Sequence[str] = (),
    seed: int | None = None,
) -> WrappedResult:
    if not argv:
        raise ValidationError("no command to run", hint="write labvault run [OPTIONS] -- CMD ARGS...")
    cwd = Path.cwd()
    names = [_output_name(o, cwd) for o in outputs]  # refuse bad output paths before anything runs
    if seed is not None:
        check_seed(seed)
    run = service.create(
        project=project, name=name, inputs=inputs, config=config, command=list(argv), cwd=cwd, capture=True
    )
    env = {**os.environ, "LABVAULT_RUN_ID": run.id}
    if vault_dir is not None:  # None through a server: the command reaches the same one (LABVAULT_URI, login)
        env["LABVAULT_DIR"] = str(vault_dir.resolve())
    if seed is not None:
        env["LABVAULT_SEED"] = env["PYTHONHASHSEED"] = str(seed)
        service.record_seed(
            run.id,
            {"seed": seed, "exported": ["LABVAULT_SEED", "PYTHONHASHSEED"], "pythonhashseed": str(seed)},
        )
    executable, early = _resolve(argv[0], cwd)
    if executable is None:
        what = "not found" if early == EXIT_NOT_FOUND else "not executable"
        code = cast(int, early)  # _resolve gives an exit code whenever it finds no executable
        service.finish(run.id, status="failed", exit_code=code, error=f"command {argv[0]!r} {what}")
        return WrappedResult(service.get(run.id), code, ())
    received: list[int] = []
    with tempfile.TemporaryFile() as out_sink, tempfile.TemporaryFile() as err_sink:
        try:
            child = subprocess.Popen(
                [executable, *argv[1:]],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                process_group=0,  # signals reach it through us, exactly once
            )
        except OSError as exc:
            code = EXIT_NOT_EXECUTABLE if isinstance(exc, PermissionError) else EXIT_WRAPPER
            service.finish(run.id, status="failed", exit_code=code, error=f"cannot start {argv[0]!r}: {exc}")
            return WrappedResult(service.get(run.id), code, ())

        def _forward(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, _forward) for s in _FORWARDED}
        # Both streams were opened with PIPE, so Popen always sets them.
        stdout, stderr = cast(IO[bytes], child.stdout), cast(IO[bytes], child.stderr)
        pumps = [
            threading.Thread(target=_pump, args=(stdout, sys.stdout.buffer, out_sink), daemon=True),
            threading.Thread(target=_pump, args=(stderr, sys.stderr.buffer, err_sink), daemon=True),
        ]
        for t in pumps:
            t.start()
        try:
            returncode = child.wait()
            for t in pumps:
                t.join()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            stdout.close()
            stderr.close()
        update: dict[str, Any] = {}
        for stream, sink in (("stdout", out_sink), ("stderr", err_sink)):
            sink.seek(0)
            data = sink.read()
            if data:
                update[stream] = str(service.log_output(run.id, data))
        if update:
            service.update_capture(run.id, update)
    return _finish(service, run, returncode, received, outputs, names, cwd)


def _finish(
    service: Tracking,
    run: Run,
    returncode: int,
    received: list[int],
    outputs: Sequence[str],
    names: list[str],
    cwd: Path,
) -> WrappedResult:
    missing: list[str] = []
    warnings: list[str] = []
    for given, art_name in zip(outputs, names, strict=True):
        path = Path(given) if Path(given).is_absolute() else cwd / given
        if not path.exists():
            missing.append(given)
            continue
        try:
            artifact = store_path(service.objects, path, name=art_name, role_path=given)
            service.record_artifact(run.id, artifact, role="output")
        except LabvaultError as exc:
            warnings.append(f"output {given}: {exc}")
            missing.append(given)
    if warnings:
        service.update_capture(run.id, {"warnings": warnings})
    status: RunStatus
    if returncode < 0:
        code, status = 128 - returncode, "killed"
        error: str | None = f"killed by {signal.Signals(-returncode).name}"
    elif received:
        code, status = returncode, "killed"
        error = f"stopped by {signal.Signals(received[0]).name} (exit code {returncode})"
    elif returncode != 0:
        code, status, error = returncode, "failed", f"exit code {returncode}"
    elif missing:
        code, status = 1, "failed"
        error = "declared outputs were not produced: " + ", ".join(missing)
    else:
        code, status, error = 0, "finished", None
    service.finish(run.id, status=status, exit_code=returncode if returncode >= 0 else code, error=error)
    return WrappedResult(service.get(run.id), code, tuple(missing))
