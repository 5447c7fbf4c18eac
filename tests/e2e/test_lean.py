"""The lean paths (``cli/lean.py`` for the read commands, ``cli/entry.py`` for ``data add/status``)
print exactly what the typer application prints: every command here runs both ways
(``LABVAULT_CLI_FULL=1`` forces the typer application) and the two results are compared."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from labvault.vault import Vault
from tests.e2e.conftest import Cli

FULL = {"LABVAULT_CLI_FULL": "1"}


def _same(cli: Cli, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    lean = cli(*args, expect=None, cwd=cwd)
    full = cli(*args, expect=None, cwd=cwd, env=FULL)
    assert (lean.returncode, lean.stdout, lean.stderr) == (full.returncode, full.stdout, full.stderr), args
    return lean


_FULL_TRIAL = os.environ.get("LABVAULT_TEST_FULL") == "1"


@pytest.fixture
def filled(project: Path, cli: Cli) -> Path:
    """A SQLite vault with runs (deleted, NaN, artifacts, markup in a name), models, aliases, an
    archived version, datasets and audit events."""
    return _fill(project, cli, None)


@pytest.fixture
def pg_filled(project: Path, cli: Cli, pg_url: str) -> Path:
    """``filled`` with its metadata in PostgreSQL."""
    return _fill(project, cli, pg_url)


def _fill(project: Path, cli: Cli, url: str | None) -> Path:
    import labvault as lv

    vault, _ = Vault.init(project, database_url=url)
    with vault:
        for i in range(12):
            with lv.start_run(project="fraud" if i % 3 else "other", name=f"train-{i}") as run:
                run.log_params({"depth": i % 4, "lr": 0.1, "name": "x"})
                run.log_metrics({"auc": i / 10, "loss": float("nan") if i == 4 else 1 / (i + 1)})
                run.log_metric("auc", i / 9, step=1)
                run.set_tags({"team": "risk"})
                (project / f"model{i}.bin").write_bytes(bytes([i]) * 10)
                run.log_artifact(str(project / f"model{i}.bin"))
        with lv.start_run(name="[bold]odd :100: name"):
            pass
        gone = vault.runs.list()[-1]
        vault.runs.delete(gone.id)
        for i in range(3):
            (project / "m").mkdir(exist_ok=True)
            (project / "m" / "w.bin").write_bytes(bytes([i]) * 100)
            vault.registry.register("fraud/detector", project / "m", message=f"try {i}")
        (project / "d").mkdir()
        for i in range(2):
            (project / "d" / "t.csv").write_text("a,b\n" + "".join(f"{j},{j * i}\n" for j in range(5)))
            vault.data.add("transactions", project / "d", message=f"v{i}")
    cli("models", "promote", "fraud/detector@0.1.1", "--to", "prod")
    cli("models", "archive", "fraud/detector@0.1.0", "-m", "bad")
    return project


READS = [
    ("runs", "list"),
    ("runs", "list", "--json"),
    ("runs", "list", "-p", "fraud", "--limit", "3"),
    ("runs", "list", "--project=fraud", "-l", "0", "--json"),
    ("runs", "list", "--deleted"),
    ("runs", "list", "--deleted", "--json", "-q"),
    ("runs", "list", "-p", "nobody"),
    ("runs", "list", "-p", "bad/name"),
    ("runs", "list", "--limit", "-1"),
    ("runs", "list", "--limit", "99999999999999999999"),
    ("audit", "log", "-n", "9223372036854775808"),
    ("runs", "list", "--filter", "metrics.auc > 0.5"),
    ("runs", "list", "-f", "params.depth = 2 and tags.team = 'risk'", "--sort", "metrics.auc", "--json"),
    ("runs", "list", "--sort=name", "-l", "4"),
    ("runs", "list", "-s", "-metrics.loss"),
    ("runs", "list", "--filter", "metrics.auc >"),
    ("runs", "list", "--sort", "nothing.here"),
    ("models", "list"),
    ("models", "list", "--json"),
    ("models", "versions", "fraud/detector"),
    ("models", "versions", "fraud/detector", "--all", "--json"),
    ("models", "versions", "fraud/nothing"),
    ("models", "versions", "fraud/detector@prod"),
    ("models", "show", "fraud/detector"),
    ("models", "show", "fraud/detector", "--json"),
    ("models", "show", "fraud/detector@prod"),
    ("models", "show", "fraud/detector@prod", "--json"),
    ("models", "show", "fraud/detector@0.1.0"),
    ("models", "show", "fraud/detector@0.1.2", "--json"),
    ("models", "show", "fraud/detector@0.9.9"),
    ("models", "show", "fraud/detector@1.2"),
    ("models", "show", "fraud/detector@staging"),
    ("models", "show", "fraud/nothing@0.1.0"),
    ("models", "show", "fraud/nothing@prod"),
    ("models", "show", "fraud/nothing"),
    ("data", "list"),
    ("data", "list", "--json"),
    ("data", "show", "transactions"),
    ("data", "show", "transactions@v1", "--json"),
    ("data", "show", "data:transactions@v9"),
    ("data", "show", "sha256:abcdef0123"),
    ("data", "log", "transactions"),
    ("data", "log", "data:transactions", "--json"),
    ("data", "log", "nothing"),
    ("data", "log", "../x"),
    ("audit", "log"),
    ("audit", "log", "--json"),
    ("audit", "log", "--subject", "fraud/detector", "-n", "2"),
    ("audit", "log", "--subject", "FRAUD", "--action", "archive", "--json"),
    ("audit", "log", "--limit", "0"),
    ("audit", "log", "--subject"),
    ("runs", "list", "--help"),
    ("-v", "models", "list", "extra"),
    ("version",),
    ("version", "--json"),
    ("-q", "version"),
    ("version", "--bogus"),
]


def test_read_commands_print_the_same_both_ways(cli: Cli, filled: Path) -> None:
    for args in READS:
        _same(cli, *args)
    listed = json.loads(_same(cli, "runs", "list", "--json").stdout)
    assert len(listed) == 12
    assert {r["metrics"]["loss"] for r in listed if r["name"] == "train-4"} == {"NaN"}
    assert " [bold]odd :100: name " in _same(cli, "runs", "list").stdout  # cell text is never markup
    assert json.loads(_same(cli, "models", "list", "--json").stdout)[0]["aliases"] == {"prod": "0.1.1"}
    shown = json.loads(_same(cli, "models", "show", "fraud/detector@prod", "--json").stdout)
    assert (shown["version"], shown["aliases"]) == ("0.1.1", ["prod"])
    assert "w.bin" in {f["path"] for f in shown["file_list"]}


def test_read_commands_outside_a_vault_and_on_an_old_schema(cli: Cli, filled: Path, tmp_path: Path) -> None:
    assert _same(cli, "runs", "list", cwd=tmp_path).returncode == 3
    # A schema to migrate is the full path's to upgrade: the lean path steps aside.
    db = filled / ".labvault" / "meta.db"
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE vault_meta SET value = 'old' WHERE key = 'schema_revisions'")
    lean = cli("models", "list")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM vault_meta WHERE key = 'schema_revisions'").fetchone()[0] != "old"
    assert lean.stdout == cli("models", "list", env=FULL).stdout


FILTERS = [
    ("--filter", "metrics.auc > 0.5 and not params.depth in (1, 3)"),
    ("-f", "tags.team like 'r%' or name like 'train-1_'", "-s", "-params.depth"),
    ("-f", "name like 'TRAIN%'", "--json"),
    ("-f", "status = 'finished' and ended > '2000-01-01'", "-s", "ended", "-l", "5"),
    ("-f", "not not metrics.loss < 0.2", "-s", "-metrics.loss", "--json"),
    ("-f", "inputs = 'data:transactions@v1'", "--json"),
    ("-f", "inputs != 'data:transactions@v1'"),
    ("-f", "inputs like 'data:trans%' and project = 'fraud'"),
    ("-f", "inputs not like 'data:%'", "-p", "fraud"),
    ("-f", "inputs in ('data:transactions@v2', 'x')"),
    ("-f", "params.name = 'x' and (params.lr = 0.1 or tags.team != 'risk')", "-s", "tags.team"),
    ("-f", "user = 'nobody'"),
    (
        "-f",
        "   ",
    ),
    ("-s", "-started", "--deleted"),
    ("-s", "params.depth", "-l", "3"),
    ("-s", "--json"),
    ("-f", "--json"),
    ("-f", "metrics.auc > 'x'"),
    ("-f", "inputs > 'a'"),
    ("-s", "inputs"),
    ("-s", "metrics"),
    ("-f", "bogus.x = 1"),
    ("-f", "name = 'unterminated"),
    ("-f", "started > 'yesterday'"),
    ("-f", "(name = 'a'", "-p", "bad/name"),
    ("-f", "name = 'a'", "-l", "-1"),
]


def test_filters_and_sorts_give_the_same_runs_and_errors_both_ways(cli: Cli, filled: Path) -> None:
    import labvault as lv

    with lv.start_run(name="fed", project="fraud", inputs=["data:transactions@v1"]):
        pass
    for args in FILTERS:
        _same(cli, "runs", "list", *args)
    fed = json.loads(_same(cli, "runs", "list", "-f", "inputs like 'data:%'", "--json").stdout)
    assert [r["name"] for r in fed] == ["fed"]
    refused = _same(cli, "runs", "list", "-f", "metrics.auc > 'x'")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[1:3] == ["hint: metrics.auc > 'x'", "                    ^"]


# One of each read command and of each filter form: on PostgreSQL the full path takes seconds a
# command on a busy machine; LABVAULT_TEST_FULL=1 runs every case of READS and FILTERS there too.
PG_SAMPLE = [
    ("runs", "list", "--json"),
    ("runs", "list", "-p", "fraud", "--limit", "3"),
    ("runs", "list", "-f", "name like 'TRAIN%' or user = 'x'", "-s", "-params.depth", "--json"),
    ("runs", "list", "-f", "inputs like 'data:%' and ended > '2000-01-01'", "-s", "tags.team"),
    ("runs", "list", "-f", "metrics.auc > 'x'"),
    ("models", "list", "--json"),
    ("models", "versions", "fraud/detector", "--all"),
    ("models", "show", "fraud/detector"),
    ("models", "show", "fraud/detector@prod", "--json"),
    ("data", "list", "--json"),
    ("data", "show", "transactions@v1"),
    ("data", "log", "transactions"),
    ("audit", "log", "--json", "--subject", "fraud/"),
]


@pytest.mark.postgres
def test_reads_on_postgresql_print_the_same_both_ways(cli: Cli, pg_filled: Path) -> None:
    import labvault as lv

    with lv.start_run(name="fed", project="fraud", inputs=["data:transactions@v1"]) as run:
        run.log_metric("auc", 0.5, step=3)
    cases = [*READS, *(("runs", "list", *f) for f in FILTERS)] if _FULL_TRIAL else PG_SAMPLE
    for args in [*cases, ("runs", "show", run.id), ("runs", "show", run.id[:8], "--json")]:
        _same(cli, *args)
    listed = json.loads(_same(cli, "runs", "list", "--json").stdout)
    assert {r["user"] for r in listed} == {lv.open().user}  # "user" is a keyword in PostgreSQL


_KILLED = """
import os, signal, labvault as lv
run = lv.start_run(name="doomed", inputs=["data:transactions@v1"])
run.log_metric("m", 1.0)
print(run.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_runs_show_prints_the_same_both_ways(cli: Cli, filled: Path) -> None:
    import labvault as lv

    (filled / "cfg.yaml").write_text("lr: 0.1\n")
    with lv.start_run(name="fed", inputs=["data:transactions@v1", "data:transactions"], config="cfg.yaml") as run:
        run.log_params({"note": "[red]x[/red] :smile:"})
        for step in range(3):
            run.log_metric("auc", step / 3, step=step)
        fed = run.id
    for verdict in ("reproduced", "not reproduced"):
        with lv.start_run(name="again", tags={"reproduces": f"run:{fed}", "reproduce_verdict": verdict}):
            pass
    killed = subprocess.run([sys.executable, "-c", _KILLED], cwd=filled, capture_output=True, text=True, check=False)
    assert killed.returncode == -signal.SIGKILL
    doomed = killed.stdout.strip()
    listed = json.loads(cli("runs", "list", "--json", "--deleted").stdout)
    deleted = listed[0]["id"]
    others = [r["id"] for r in json.loads(cli("runs", "list", "--json").stdout)]
    for run_id in (fed, doomed, deleted, *others[:4]):
        _same(cli, "runs", "show", run_id)
        _same(cli, "runs", "show", f"run:{run_id}", "--json")
    shown = _same(cli, "runs", "show", fed[:8].upper()).stdout
    assert "reproduced by" in shown
    assert "(not reproduced)" in shown
    assert "[red]x[/red] :smile:" in shown
    assert "is gone: it was killed or crashed" in _same(cli, "runs", "show", doomed).stdout
    doc = json.loads(_same(cli, "runs", "show", fed, "--json").stdout)
    assert [i["ref"] for i in doc["inputs"]] == ["data:transactions@v1", "data:transactions@v2"]
    assert all(i["manifest_sha256"].startswith("sha256:") for i in doc["inputs"])
    assert [p["value"] for p in doc["metric_history"]["auc"]] == [0, 1 / 3, 2 / 3]
    assert [r["verdict"] for r in doc["reproductions"]] == ["reproduced", "not reproduced"]
    for bad in ("run:ffffffffffff", "fffffff", "nothex", "run:", "abc"):
        assert _same(cli, "runs", "show", bad).returncode in (2, 3), bad
    assert _same(cli, "runs", "show", fed, "extra").returncode == 2


ADDS = [
    ("data", "add", "d", "data", "-m", "first"),
    ("data", "add", "d", "data", "--message=again"),
    ("data", "status"),
    ("data", "status", "--json"),
    ("data", "status", "d"),
    ("data", "status", "data"),
    ("data", "add", "e", "data", "--no-gitignore", "-q"),
    ("data", "add", "bad/name", "data"),
    ("data", "add", "d"),
    ("data", "add", "d", "data", "-m"),
    ("data", "add", "d", "data", "--bogus"),
    ("data", "status", "a", "b", "c"),
    ("data", "status", "nothing"),
]


def test_data_add_and_status_behave_the_same_both_ways(cli: Cli, tmp_path: Path) -> None:
    """The hand-written parser of ``cli/entry.py`` against typer's, on twin projects."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    twins = [tmp_path / "lean", tmp_path / "full"]
    for twin in twins:
        (twin / "data").mkdir(parents=True)
        (twin / "data" / "t.csv").write_text("a,b\n1,2\n")
        subprocess.run(["git", "init", "-q"], cwd=twin, check=True, env=env)
        cli("-q", "init", cwd=twin)
    for args in ADDS:
        if args[:3] == ("data", "status", "data"):
            for twin in twins:
                (twin / "data" / "t.csv").write_text("a,b\n1,3\n")
        lean = cli(*args, expect=None, cwd=twins[0])
        full = cli(*args, expect=None, cwd=twins[1], env=FULL)
        assert (lean.returncode, lean.stdout, lean.stderr) == (full.returncode, full.stdout, full.stderr), args


def test_a_damaged_database_is_reported_the_same_both_ways(cli: Cli, filled: Path) -> None:
    import sqlite3

    with sqlite3.connect(filled / ".labvault" / "meta.db") as conn:
        conn.execute("DROP TABLE run_latest")
    failed = _same(cli, "runs", "list")
    assert failed.returncode == 7
    assert failed.stderr.startswith("error: metadata database error (no such table: run_latest)")
