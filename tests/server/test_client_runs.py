"""The runs commands through a server (``LABVAULT_URI``): list with the filter language, show,
compare, export, artifacts, delete and restore print what they print on the server's own vault, on
SQLite and on the team vault (PostgreSQL + S3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.conftest import Served
from tests.server.test_client_models import World

# The team-vault half runs with LABVAULT_TEST_FULL=1 (test_client_data and test_api cross it by default).
TEAM_BY_DEFAULT = False

TRAIN = (
    "import json, os, sys; import labvault as lv; os.makedirs('out/sub', exist_ok=True); "
    "open('out/model.bin', 'w').write(sys.argv[1]); open('out/sub/notes.txt', 'w').write('n'); "
    "json.dump({'auc': float(sys.argv[2])}, open('out/metrics.json', 'w'))"
)


@pytest.fixture(scope="module")
def world(served: Served, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Three runs made on the server's machine (one with params and metric histories)."""
    w = World.fresh(served, tmp_path_factory)
    ids = []
    for weights, auc in (("w1", "0.91"), ("w2", "0.97"), ("w3", "NaN")):
        ran = w.local("run", "-o", "out", "--name", f"train-{weights}", "--", sys.executable, "-c", TRAIN, weights, auc)
        ids.append(ran.stderr.split("run:")[1].split()[0])
    w.run_id, w.other_run = ids[0], ids[1]
    script = (
        "import labvault as lv\n"
        "with lv.start_run(project='proj', name='logged') as run:\n"
        "    lv.log_params({'depth': 4, 'lr': 0.1})\n"
        "    for i in range(5):\n"
        "        lv.log_metric('loss', 1.0 / (i + 1), step=i)\n"
        "    lv.log_metric('auc', float('nan'))\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=served.root, env=w.env(None), check=True, timeout=120)
    logged = json.loads(w.local("runs", "list", "--filter", "name = 'logged'", "--json").stdout)[0]["id"]
    w.names.update(RUN=w.run_id, OTHER=w.other_run, LOGGED=logged)
    return w


# Each command in both formats under LABVAULT_TEST_FULL=1; by default each in one (both for the
# listing and show), so that the two backends' subprocesses stay within the suite's time budget.
FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"
COMMANDS = [
    (("runs", "list"), "both"),
    (("runs", "list", "--filter", "metrics.auc > 0.95"), "json"),
    (("runs", "list", "--filter", "params.depth = 4", "--project", "proj"), "human"),
    (("runs", "list", "--sort", "-name", "--limit", "2"), "json"),
    (("runs", "show", "RUN"), "both"),
    (("runs", "show", "LOGGED"), "json"),
    (("runs", "compare", "RUN", "OTHER"), "both"),
    (("runs", "compare", "RUN", "OTHER", "--all"), "human"),
    (("lineage", "RUN"), "human"),
]
CASES = [(args, fmt) for args, formats in COMMANDS for fmt in ("human", "json") if FULL or formats in ("both", fmt)]


def _fill(world: World, args: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(world.names.get(a, a) for a in args)


@pytest.mark.parametrize(("args", "fmt"), CASES, ids=[f"{' '.join(a)} {f}" for a, f in CASES])
def test_same_output_as_the_local_vault(world: World, args: tuple[str, ...], fmt: str) -> None:
    args = _fill(world, args)
    if fmt == "json":
        args = (*args, "--json")
    local = world.local(*args)
    through = world.server(*args)
    assert through.stdout == local.stdout
    assert through.stdout.strip()


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_is_the_same_document(world: World, fmt: str, tmp_path: Path) -> None:
    local = world.local("runs", "export", world.run_id, "--format", fmt)
    through = world.server("runs", "export", world.run_id, "--format", fmt)
    assert through.stdout == local.stdout
    world.server("runs", "export", f"run:{world.run_id}", "--format", fmt, "-o", str(tmp_path / "run.out"))
    assert (tmp_path / "run.out").read_text() == local.stdout


def test_artifacts_download_verified(world: World, tmp_path: Path) -> None:
    local = world.local("runs", "artifacts", world.other_run, "-o", str(tmp_path / "local"), "--json")
    through = world.server("runs", "artifacts", world.other_run, "-o", str(tmp_path / "server"), "--json")
    assert through.stdout == local.stdout
    assert (tmp_path / "server" / "out" / "model.bin").read_text() == "w2"
    assert (tmp_path / "server" / "out" / "sub" / "notes.txt").read_text() == "n"
    again = json.loads(
        world.server("runs", "artifacts", world.other_run, "-o", str(tmp_path / "server"), "--json").stdout
    )
    assert not any(f["written"] for f in again)
    (tmp_path / "server" / "out" / "model.bin").write_text("different")
    world.server("runs", "artifacts", world.other_run, "-o", str(tmp_path / "server"), expect=4)


def test_delete_and_restore(world: World) -> None:
    run = _fill(world, ("LOGGED",))[0]
    gone = world.server("runs", "delete", run)
    assert gone.stdout.startswith(f"deleted run:{run}")
    assert world.server("runs", "list", "--deleted").stdout == world.local("runs", "list", "--deleted").stdout
    assert run not in world.server("runs", "list").stdout
    world.server("runs", "restore", run, role="reader", expect=8)
    back = json.loads(world.server("runs", "restore", run, "--json").stdout)
    assert (back["id"], back["deleted_at"]) == (run, None)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("runs", "show", "run:ffffffffffff"), 3),
        (("runs", "list", "--filter", "metrics.auc >"), 2),
        (("runs", "compare", "RUN", "run:ffffffffffff"), 3),
    ],
)
def test_errors_are_the_local_ones(world: World, args: tuple[str, ...], code: int) -> None:
    args = _fill(world, args)
    local = world.local(*args, expect=code)
    through = world.server(*args, expect=code)
    assert through.stderr.splitlines()[0] == local.stderr.splitlines()[0]
