"""``labvault env show|diff|export`` end to end."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labvault.refs import Digest
from labvault.vault import Vault
from tests.e2e.conftest import Cli


@pytest.fixture
def recorded(project: Path, cli: Cli) -> str:
    cli("init")
    return cli("run", "--", sys.executable, "-c", "print(1)").stderr.split("run:")[1].split()[0]


def test_show_lists_python_and_every_package(cli: Cli, recorded: str) -> None:
    doc = json.loads(cli("env", "show", recorded, "--json").stdout)
    assert doc["python"] == f"CPython {platform.python_version()}"
    assert {"name": "typer", "version": doc_version("typer")} in [
        {k: p[k] for k in ("name", "version")} for p in doc["packages"]
    ]
    assert "typer" in cli("env", "show", recorded).stdout


def doc_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def test_diff_against_this_environment_and_another_run(project: Path, cli: Cli, recorded: str) -> None:
    assert cli("env", "diff", recorded).stderr.strip() == "no difference"
    with Vault.open(project) as vault:
        run = vault.runs.create(command=["x"])
        doc = json.loads(vault.objects.get_bytes(Digest(run.capture["environment"].removeprefix("sha256:"))))
        doc["packages"] = [p for p in doc["packages"] if p["name"] != "rich"] + [{"name": "zzz", "version": "1"}]
        for p in doc["packages"]:
            if p["name"] == "typer":
                p["version"] = "0.0.1"
        with vault.objects.batch():
            digest = vault.objects.put_bytes(json.dumps(doc).encode())
        vault.runs.update_capture(run.id, {"environment": str(digest)})
        vault.runs.finish(run.id)

    out = json.loads(cli("env", "diff", recorded, run.id, "--json").stdout)

    assert out["changed"] == [{"name": "typer", "a": doc_version("typer"), "b": "0.0.1"}]
    assert out["added"] == ["zzz==1"]
    assert out["removed"] == [f"rich=={doc_version('rich')}"]
    assert out["python"] is None
    assert f"~ typer {doc_version('typer')} -> 0.0.1" in cli("env", "diff", recorded, run.id).stdout


def test_export_formats(cli: Cli, recorded: str, tmp_path: Path) -> None:
    python = platform.python_version()
    docker = cli("env", "export", recorded, "--format", "dockerfile").stdout
    assert f"FROM python:{python}-slim" in docker
    assert f"'typer=={doc_version('typer')}'" in docker
    assert "labvault" not in docker.split("\n", 1)[1].replace(f"run:{recorded}", "")  # never by name from an index
    conda = cli("env", "export", recorded, "--format", "conda").stdout
    assert f"  - python={python}\n" in conda
    uv = cli("env", "export", recorded, "--format", "uv").stdout
    assert f'requires-python = "=={sys.version_info[0]}.{sys.version_info[1]}.*"' in uv
    assert "unknown format 'pip'" in cli("env", "export", recorded, "--format", "pip", expect=2).stderr


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
def test_a_requirements_export_installs_with_uv(cli: Cli, recorded: str, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    cli("env", "export", recorded, "--output", str(requirements))
    venv = tmp_path / "venv"
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    subprocess.run(["uv", "venv", "-q", "--python", minor, str(venv)], check=True)
    subprocess.run(
        ["uv", "pip", "install", "-q", "--no-deps", "--python", str(venv / "bin" / "python"), "-r", str(requirements)],
        check=True,
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('typer'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == doc_version("typer")
