"""The run wrapper called in-process (the CLI calls it in a subprocess in tests/e2e/test_runs.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from labvault.services.tracking.wrapper import run_command
from labvault.vault import Vault


def test_run_command_in_process_closes_the_child_pipes(vault: Vault, capfd: pytest.CaptureFixture[str]) -> None:
    # pytest turns warnings into errors: an unclosed pipe raises ResourceWarning when it is collected.
    for _ in range(3):
        code = "import sys; print('out'); print('err', file=sys.stderr)"
        result = run_command(vault.runs, [sys.executable, "-c", code], vault_dir=vault.dir)
        assert result.exit_code == 0
        assert result.run.status == "finished"
    captured = capfd.readouterr()
    assert captured.out.count("out") == 3
    assert captured.err.count("err") == 3


def test_run_command_in_process_records_a_failing_command(vault: Vault, project: Path) -> None:
    result = run_command(vault.runs, [sys.executable, "-c", "raise SystemExit(3)"], vault_dir=vault.dir)
    assert result.exit_code == 3
    assert result.run.status == "failed"
