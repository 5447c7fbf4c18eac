"""Start-up stays light: the package root and ``labvault --help`` import no heavy libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import LABVAULT

HEAVY = ("sqlalchemy", "pydantic", "numpy", "pandas", "alembic", "pyarrow", "fsspec")

_CHECK = """
import sys
{code}
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
print(",".join(heavy))
"""


def _heavy_after(code: str, cwd: Path | None = None) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK.format(code=code, heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
    )
    return [m for m in proc.stdout.strip().split(",") if m]


def _imported_by(args: list[str], cwd: Path) -> set[str]:
    """Top-level packages the real executable imports, read from ``python -X importtime``."""
    return {name.split(".")[0] for name in _modules_imported_by(args, cwd)}


def _modules_imported_by(args: list[str], cwd: Path) -> set[str]:
    """Modules the real executable imports, read from ``python -X importtime``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", LABVAULT, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert "labvault" in names  # the measurement itself works
    return names


def test_import_labvault_is_light() -> None:
    assert _heavy_after("import labvault") == []


def test_lazy_names_load_on_first_use(tmp_path: Path) -> None:
    assert _heavy_after("import labvault; labvault.parse_ref('run:abcdef'); labvault.Digest") == []
    assert _heavy_after("import labvault; labvault.Vault") == []
    # the metadata database (SQLAlchemy) is opened on first use, not by Vault.open
    from labvault.vault import Vault

    Vault.init(tmp_path)[0].close()
    opened = "import labvault; v = labvault.open(); v.objects.put_bytes(b'x')"
    assert _heavy_after(opened, cwd=tmp_path) == []
    assert "sqlalchemy" in _heavy_after(opened + "; v.meta", cwd=tmp_path)


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    assert _imported_by(["--help"], tmp_path) & set(HEAVY) == set()


@pytest.mark.parametrize("args", [["object", "--help"], ["version"], ["gc", "--help"]])
def test_commands_import_no_database_or_data_libraries_before_they_need_them(args: list[str], tmp_path: Path) -> None:
    # Running any command makes typer import pydantic (typer._adapters converts parameters with it),
    # so only `labvault --help` itself can be pydantic-free.
    assert _imported_by(args, tmp_path) & (set(HEAVY) - {"pydantic"}) == set()


def test_object_commands_do_not_open_the_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    subprocess.run([LABVAULT, "-q", "init"], cwd=tmp_path, env=env, check=True)
    (tmp_path / "f.txt").write_text("light")
    for args in (["object", "put", "f.txt"], ["object", "ls"]):
        assert "sqlalchemy" not in _imported_by(args, tmp_path)


def test_data_add_and_status_start_without_typer_or_pydantic(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    subprocess.run([LABVAULT, "-q", "init"], cwd=tmp_path, env=env, check=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("lean\n")
    for args in (["data", "add", "d", "d", "-m", "first"], ["data", "status", "--json"]):
        imported = _imported_by(args, tmp_path)
        assert not imported & {"typer", "pydantic", "rich"}, args
    assert "pydantic" in _imported_by(["data", "add", "d", "d", "--help"], tmp_path)  # help goes to typer
    assert "sqlalchemy" not in _imported_by(["data", "status"], tmp_path)  # the vault, but not its database


def test_read_commands_start_without_typer_pydantic_rich_or_sqlalchemy(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    subprocess.run([LABVAULT, "-q", "init"], cwd=tmp_path, env=env, check=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("lean\n")
    for setup in (
        ["data", "add", "d", "d"],
        ["models", "register", "a/b", "d"],
        ["models", "promote", "a/b@0.1.0", "--to", "prod"],
        ["run", "--", "true"],
    ):
        subprocess.run([LABVAULT, "-q", *setup], cwd=tmp_path, env=env, check=True)
    listed = subprocess.run(
        [LABVAULT, "runs", "list", "--json"], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    run_id = json.loads(listed.stdout)[0]["id"]
    reads = [
        ["version"],
        ["version", "--json"],
        ["runs", "list"],
        ["runs", "list", "-p", "x", "--limit", "5", "--json"],
        ["runs", "show", run_id],
        ["runs", "show", f"run:{run_id[:8]}", "--json"],
        ["models", "list"],
        ["models", "versions", "a/b"],
        ["models", "show", "a/b"],
        ["models", "show", "a/b@0.1.0", "--json"],
        ["models", "show", "a/b@prod"],
        ["data", "list", "--json"],
        ["data", "log", "d"],
        ["data", "show", "d"],
        ["audit", "log", "--subject", "x", "-n", "3"],
    ]
    for args in reads:
        imported = _modules_imported_by(args, tmp_path)
        tops = {name.split(".")[0] for name in imported}
        assert not tops & {"typer", "pydantic", "sqlalchemy", "click"}, args
        # the plain writer prints these tables: cells are never markup, and the headers are plain
        assert "rich" not in tops, args
    # a filter and a sort compile to plain SQL, shared with the full path
    for args in (["--filter", "name = 'x' and metrics.auc > 0.5"], ["-f", "inputs like 'data:%'", "-s", "-params.a"]):
        assert not _imported_by(["runs", "list", *args], tmp_path) & {"typer", "click", "pydantic", "sqlalchemy"}
    # what the lean path does not parse goes to the typer application
    assert "typer" in _imported_by(["runs", "list", "--help"], tmp_path)


@pytest.mark.postgres
def test_read_commands_on_postgresql_start_without_sqlalchemy(tmp_path: Path, pg_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    subprocess.run([LABVAULT, "-q", "init", "--db", pg_url], cwd=tmp_path, env=env, check=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("lean\n")
    for setup in (["data", "add", "d", "d"], ["models", "register", "a/b", "d"], ["run", "--", "true"]):
        subprocess.run([LABVAULT, "-q", *setup], cwd=tmp_path, env=env, check=True)
    reads = [
        ["runs", "list", "-f", "inputs like 'x%' or name = 'y'", "-s", "-started"],
        ["models", "list"],
        ["models", "show", "a/b@0.1.0"],
        ["data", "log", "d", "--json"],
        ["audit", "log"],
    ]
    for args in reads:
        tops = _imported_by(args, tmp_path)
        assert "psycopg" in tops, args  # the measurement itself: the lean path read PostgreSQL
        assert not tops & {"typer", "pydantic", "sqlalchemy", "click", "rich"}, args
