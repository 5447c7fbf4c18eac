"""``scripts/demo``, README's first command, runs to the end: the whole workflow on a fresh project."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_demo_runs_to_the_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")} | {"LABVAULT_DEMO_NO_INSTALL": "1"}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "demo"), str(tmp_path / "demo-project")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "**Verdict: REPRODUCED** (exit code 0)" in out
    assert "-> reproduced_by: run:" in out
    assert "schema changed" in out
    assert "schema: added channel" in out
    assert "configs/run.yaml: threshold_quantile: 0.9 -> 0.95" in out
    assert "Traceback" not in proc.stderr
