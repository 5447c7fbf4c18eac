"""``labvault reproduce`` through a server (``LABVAULT_URI``) and on a local vault, the same tests both
ways: a run recorded by ``labvault run`` (code with a dirty patch, an ignored config, a data input, a
seed, a declared output) is rerun on a clean workspace of this machine after the checkout moved on;
through a server the rerun is recorded there and the objects compared come from it. The verdict,
the report and the exit code are the same as locally. The real executable, on a SQLite vault (the
team vault's half with ``LABVAULT_TEST_FULL=1``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from labvault.vault import Vault
from tests.e2e.test_reproduce import TRAIN, _data, _git, _state
from tests.server.conftest import Served
from tests.server.test_client_models import World

FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"
# The team vault's half (PostgreSQL + S3, two server processes) runs with LABVAULT_TEST_FULL=1.
TEAM_BY_DEFAULT = False
SIDES = ["local", "server"]


@pytest.fixture(scope="module")
def world(served: Served, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Two git projects: the server's vault folder (the local side) and a folder with no vault."""
    w = World.fresh(served, tmp_path_factory)
    for project in (served.root, w.client):
        _git(project, "init", "-q", "-b", "main")
        _git(project, "config", "user.email", "t@example.com")
        _git(project, "config", "user.name", "t")
        (project / ".gitignore").write_text(".labvault/\nconfigs/\n")  # the config is ignored by git
    return w


def _project(world: World, side: str) -> Path:
    return world.client if side == "server" else world.served.root


def _run_id(out: subprocess.CompletedProcess[str]) -> str:
    return out.stderr.split("run:")[1].split()[0]


def _reproduce(world: World, side: str, *args: str, expect: int) -> dict[str, Any]:
    doc = json.loads(world.on(side, "reproduce", *args, "--env", "current", "--json", expect=expect).stdout)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("side", SIDES)
def test_reproduce_after_the_checkout_moved_on(world: World, side: str) -> None:
    project = _project(world, side)
    (project / "train.py").write_text(TRAIN)
    (project / "configs").mkdir()
    (project / "configs" / "run.yaml").write_text("lr: 0.1\nepochs: 20\n")
    (project / "data").mkdir()
    (project / "data" / "train.csv").write_text(_data(1))
    dataset = f"train-{side}"
    world.on(side, "data", "add", dataset, "data/train.csv")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "train")
    (project / "train.py").write_text(TRAIN + "# uncommitted edit, recorded in the patch\n")
    args = ("--config", "configs/run.yaml", "--input", f"data:{dataset}", "--output", "model.json", "--seed", "7")
    trained = _run_id(world.on(side, "run", *args, "--", sys.executable, "train.py"))
    # The checkout moves on: a new commit, the data overwritten, the config edited, the tree dirty.
    (project / "train.py").write_text(TRAIN.replace("rng.gauss(0, 1)", "rng.gauss(0, 2)"))
    _git(project, "commit", "-qam", "moved on")
    (project / "data" / "train.csv").write_text(_data(2))
    (project / "configs" / "run.yaml").write_text("lr: 0.5\nepochs: 3\n")
    (project / "train.py").write_text("dirty\n")
    before = _state(project)

    doc = _reproduce(world, side, trained, expect=0)

    assert doc["verdict"] == "reproduced", doc
    assert [(a["artifact"], a["verdict"]) for a in doc["artifacts"]] == [("model.json", "IDENTICAL")]
    assert {m["metric"]: m["verdict"] for m in doc["metrics"]} == {"accuracy": "EXACT", "final_weight": "EXACT"}
    assert doc["variables"]["LABVAULT_SEED"] == "7"
    assert _state(project) == before  # the user's files and git status are untouched
    rerun = doc["reruns"][0]
    shown = json.loads(world.on(side, "runs", "show", rerun, "--json").stdout)
    assert shown["tags"] == {"reproduces": f"run:{trained}", "reproduce_verdict": "reproduced"}
    assert {a["name"] for a in shown["artifacts"]} >= {"model.json", "reproduce.md", "reproduce.json"}
    assert shown["status"] == "finished"
    assert shown["environment"]["sha256"].startswith("sha256:")  # captured on this machine, stored there
    assert [i["ref"] for i in shown["inputs"]] == [f"data:{dataset}@v1"]
    original = json.loads(world.on(side, "runs", "show", trained, "--json").stdout)
    assert original["reproductions"] == [{"ref": rerun, "verdict": "reproduced"}]
    with Vault.open(world.served.root) as vault:  # both sides' reruns live in the server's vault
        assert vault.runs.get(rerun).metrics == vault.runs.get(trained).metrics


@pytest.mark.parametrize("side", SIDES)
def test_a_different_output_is_not_reproduced(world: World, side: str) -> None:
    project = _project(world, side)
    (project / "noise.py").write_text("import os\nopen('noise.bin', 'wb').write(os.urandom(16))\n")
    _git(project, "add", "noise.py")
    _git(project, "commit", "-qm", "noise")
    run_id = _run_id(world.on(side, "run", "--output", "noise.bin", "--", sys.executable, "noise.py"))

    doc = _reproduce(world, side, run_id, expect=1)

    assert doc["verdict"] == "not reproduced"
    assert [(a["artifact"], a["verdict"]) for a in doc["artifacts"]] == [("noise.bin", "DIFFERENT")]


def test_a_pipeline_run_is_refused_through_a_server(world: World) -> None:
    """Its stages rerun against a local vault's stage records: exit 2, saying so, nothing rerun."""
    with Vault.open(world.served.root) as vault:
        run = vault.runs.create(command=["labvault", "pipeline", "run"], tags={"pipeline": "run"})
        vault.runs.finish(run.id, exit_code=0)

    err = world.server("reproduce", run.id, expect=2).stderr

    assert err.splitlines()[0] == f"error: run:{run.id} is a pipeline run: reproducing it reruns its stages, " + (
        "which runs against a local vault"
    )
    assert err.count("\n") == 2  # error + hint
    assert json.loads(world.server("runs", "show", run.id, "--json").stdout)["reproductions"] == []


@pytest.mark.skipif(not FULL, reason="builds a uv environment (about 20 s): LABVAULT_TEST_FULL=1")
def test_rebuild_through_a_server_builds_in_the_users_cache(world: World) -> None:
    project = world.client
    code = "import labvault as lv\nwith lv.start_run() as run:\n    run.log_metric('one', 1.0)\n"
    (project / "metric.py").write_text(code)
    _git(project, "add", "metric.py")
    _git(project, "commit", "-qm", "metric")
    run_id = _run_id(world.server("run", "--", sys.executable, "metric.py"))

    out = world.server("reproduce", run_id, "--env", "rebuild", "--json")

    doc = json.loads(out.stdout)
    assert doc["verdict"] == "reproduced"
    assert {m["metric"]: m["verdict"] for m in doc["metrics"]} == {"one": "EXACT"}  # logged from the rebuilt env
    envs = world.home / "cache" / "labvault" / "envs"
    assert "uv environment built in" in doc["environment"]["reason"]
    assert str(envs) in doc["environment"]["reason"]
    (env,) = [e for e in envs.iterdir() if e.is_dir()]
    shown = json.loads(world.server("runs", "show", doc["reruns"][0], "--json").stdout)
    assert shown["command"][0] == str(env / "bin" / "python")
