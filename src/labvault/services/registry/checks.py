"""Running a policy's check commands: split like a shell (``shlex``), never run through one.

A command that does not exist, is not executable, exits non-zero or outlives its timeout is a
failed gate, never an error of labvault's: the promotion is refused and the reason recorded.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CheckOutcome", "expand_command", "run_check"]

MAX_OUTPUT = 4 * 1024 * 1024  # bytes of a check's output kept; the rest is cut with a note


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    passed: bool
    exit_code: int | None
    seconds: float
    output: bytes
    detail: str


def expand_command(command: str, *, model_dir: Path, model: str, version: str) -> list[str]:
    """Split, then fill ``{model_dir}``, ``{model}`` and ``{version}`` inside each word."""
    words = shlex.split(command)
    return [
        w.replace("{model_dir}", str(model_dir)).replace("{model}", model).replace("{version}", version) for w in words
    ]


def run_check(argv: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> CheckOutcome:
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout kills its children too
            env={**os.environ, **(env or {})},
        )
    except FileNotFoundError:
        return CheckOutcome(False, None, 0.0, b"", f"command not found: {argv[0]}")
    except PermissionError:
        return CheckOutcome(False, None, 0.0, b"", f"not executable: {argv[0]}")
    except OSError as exc:
        return CheckOutcome(False, None, 0.0, b"", f"cannot start {argv[0]}: {exc.strerror}")
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        seconds = time.monotonic() - started
        return CheckOutcome(False, None, seconds, _cut(out), f"timed out after {timeout:g}s")
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    seconds = time.monotonic() - started
    code = proc.returncode
    if code == 0:
        return CheckOutcome(True, 0, seconds, _cut(out), "exit 0")
    if code < 0:
        return CheckOutcome(False, code, seconds, _cut(out), f"killed by signal {-code}")
    return CheckOutcome(False, code, seconds, _cut(out), f"exit {code}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _cut(out: bytes | None) -> bytes:
    data = out or b""
    if len(data) > MAX_OUTPUT:
        return data[:MAX_OUTPUT] + f"\n[labvault: output cut at {MAX_OUTPUT} bytes]\n".encode()
    return data
