"""End-to-end: the installed ``labvault`` executable in subprocesses (real exit codes, no traceback)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

LABVAULT = shutil.which("labvault", path=str(Path(sys.executable).parent)) or "labvault"

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(project: Path) -> Cli:
    """``cli("object", "put", "a.txt", expect=0)`` runs the real executable in the project folder.

    It asserts the exit code when ``expect`` is given and that no traceback reached stderr.
    """

    def run(
        *args: str,
        expect: int | None = 0,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
        # Let the subprocesses cache bytecode: compiling labvault's modules in every one of them
        # costs more than most commands take.
        full_env.pop("PYTHONDONTWRITEBYTECODE", None)
        proc = subprocess.run(
            [LABVAULT, *args],
            cwd=cwd or project,
            env=full_env,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        if expect is not None:
            assert proc.returncode == expect, (
                f"labvault {' '.join(args)} exited {proc.returncode}, expected {expect}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    return run
