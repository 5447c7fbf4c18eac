"""The ``reproducible`` promotion gate through the executable, with real reruns by ``labvault reproduce``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Cli

STEADY = "import labvault as lv\nopen('model.bin', 'w').write('weights')\nlv.log_metric('auc', 0.9)\n"
SHAKY = "import os\nopen('model.bin', 'wb').write(os.urandom(8))\n"


def _git(project: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


def _train(cli: Cli, project: Path, code: str) -> str:
    (project / "job.py").write_text(code)
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "job")
    out = cli("run", "--output", "model.bin", "--", sys.executable, "job.py")
    run_id = out.stderr.split("run:")[1].split()[0]
    cli("models", "register", "shop/ranker", "--from", f"run:{run_id}", "--artifact", "model.bin", "-q")
    return run_id


def test_reproducible_gate(cli: Cli, project: Path) -> None:
    _git(project, "init", "-q", "-b", "main")
    _git(project, "config", "user.email", "t@example.com")
    _git(project, "config", "user.name", "t")
    cli("init", "-q")
    (project / ".gitignore").write_text(".labvault/\nmodel.bin\n")
    (project / "labvault.yaml").write_text("models:\n  shop/ranker:\n    prod:\n      reproducible: required\n")
    steady = _train(cli, project, STEADY)

    # Never reproduced: refused, naming the command to run.
    refused = cli("models", "promote", "shop/ranker@0.1.0", "--to", "prod", expect=1)
    first = refused.stderr.splitlines()[0]
    assert first.startswith("error: shop/ranker@0.1.0 was not promoted to prod: unmet gates: reproducible (")
    assert f"run:{steady} was never reproduced: run `labvault reproduce run:{steady}`" in first

    # Reproduced: promotion passes.
    cli("reproduce", f"run:{steady}", "--env", "current", "-q", timeout=300)
    cli("models", "promote", "shop/ranker@0.1.0", "--to", "prod", "-q")
    doc = json.loads(cli("models", "check", "shop/ranker@0.1.0", "--for", "prod", "--json").stdout)
    (gate,) = [g for g in doc["gates"] if g["gate"] == "reproducible"]
    assert gate["passed"]
    assert gate["detail"].startswith("reproduced by run:")

    # A reproduction that fails: refused, and the refusal says so.
    shaky = _train(cli, project, SHAKY)
    cli("reproduce", f"run:{shaky}", "--env", "current", expect=1, timeout=300)
    refused = cli("models", "promote", "shop/ranker@0.1.1", "--to", "prod", expect=1)
    first = refused.stderr.splitlines()[0]
    assert "reproducible (not reproduced: run:" in first
    assert f"says not reproduced (1 attempt(s)); fix it, then run `labvault reproduce run:{shaky}`" in first
    assert "Traceback" not in refused.stderr
