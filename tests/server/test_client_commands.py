"""Every command through a server (``LABVAULT_URI``): it works there, or refuses in one line with
exit 2 saying where it runs; never a traceback, and never a silent use of a local vault. Also
``object put/cat/ls`` and ``runs artifacts NAME -o DIR``, the same tests on the local vault and
through the server. On a SQLite vault (the team vault's half with ``LABVAULT_TEST_FULL=1``)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from labvault.cli.app import app
from labvault.cli.entry import main
from tests.server.conftest import Served
from tests.server.test_client_models import World

FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"
# The team vault's half (PostgreSQL + S3, two server processes) runs with LABVAULT_TEST_FULL=1.
TEAM_BY_DEFAULT = False
SIDES = ["local", "server"]
SCRIPT = "import os; os.makedirs('out', exist_ok=True); open('out/model.bin', 'w').write('w'); open('log.txt', 'w')"
# Not walked: `ui` serves until stopped, `login`/`logout` keep a token in the user's files and touch no
# vault, and `run` has its own module (test_client_run.py).
NOT_WALKED = {("ui",), ("login",), ("logout",), ("run",)}


@pytest.fixture(scope="module")
def world(served: Served, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A run with two outputs, a snapshot and a model version, made on the server's machine."""
    w = World.fresh(served, tmp_path_factory)
    ran = w.local("run", "-o", "out", "-o", "log.txt", "--", sys.executable, "-c", SCRIPT)
    w.run_id = ran.stderr.split("run:")[1].split()[0]
    (served.root / "ds").mkdir()
    (served.root / "ds" / "a.csv").write_text("x\n1\n")
    w.local("data", "add", "ds", "ds")
    w.local("models", "register", "proj/m", "--from", f"run:{w.run_id}", "--artifact", "out")
    return w


@pytest.mark.parametrize("side", SIDES)
def test_object_put_cat_ls(world: World, side: str, tmp_path: Path) -> None:
    data = f"object bytes from the {side} side\n".encode()
    (tmp_path / "a.txt").write_bytes(data)
    (tmp_path / "b.txt").write_bytes(b"second\n")
    put = json.loads(world.on(side, "object", "put", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--json").stdout)
    hexd = hashlib.sha256(data).hexdigest()
    assert [(p["ref"], p["size"]) for p in put] == [(f"sha256:{hexd}", len(data)), (put[1]["ref"], 7)]
    assert world.on(side, "object", "cat", f"sha256:{hexd}").stdout.encode() == data
    world.on(side, "object", "cat", hexd[:12], "-o", str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_bytes() == data
    if side == "local":
        listed = json.loads(world.on(side, "object", "ls", "--json").stdout)
        assert {f"sha256:{hexd}", put[1]["ref"]} <= {o["ref"] for o in listed}
    else:  # listing every object of the server's store is for its machine
        err = world.on(side, "object", "ls", expect=2).stderr
        assert err.startswith("error: `object ls` runs on the server's machine")


@pytest.mark.parametrize("side", SIDES)
def test_runs_artifacts_by_name(world: World, side: str, tmp_path: Path) -> None:
    done = json.loads(world.on(side, "runs", "artifacts", world.run_id, "out", "-o", str(tmp_path), "--json").stdout)
    assert [(f["path"], f["written"]) for f in done] == [("out/model.bin", True)]
    assert (tmp_path / "out" / "model.bin").read_text() == "w"
    assert not (tmp_path / "log.txt").exists()  # only the artifact named
    world.on(side, "runs", "artifacts", world.run_id, "nope", "-o", str(tmp_path), expect=3)


def _leaves(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, sub in getattr(command, "commands", {}).items():
        if hasattr(sub, "commands"):
            yield from _leaves(sub, (*path, name))
        else:
            yield (*path, name), sub


def _value(path: tuple[str, ...], name: str, world: World, tmp_path: Path) -> str:
    """A plausible value for a required argument or option: real references where the command takes one."""
    group = path[0]
    run = world.run_id
    refs = {
        "data": {"ref": "data:ds@v1", "name": "ds", "a": "data:ds@v1", "b": "data:ds@v1", "url": "https://h.invalid/x"},
        "models": {"ref": "proj/m@0.1.0", "name": "proj/m", "alias": "staging"},
        "get": {"ref": "proj/m@0.1.0"},
        "lineage": {"ref": f"run:{run}", "a": f"run:{run}", "b": f"run:{run}"},
        "object": {"ref": "sha256:" + "0" * 64},
    }
    if name in refs.get(group, {}):
        return refs[group][name]
    common = {
        "run": run,
        "runs": run,
        "ref": run,
        "files": "file.txt",
        "path": "folder",
        "output": str(tmp_path / "out"),
        "to": "staging",
        "for": "staging",
        "role": "reader",
        "from": f"run:{run}",
    }
    return common.get(name, "x")


def test_every_command_works_or_refuses_through_a_server(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In this process, for speed, and so that opening a local vault fails the test at once."""
    (world.client / "file.txt").write_text("f")
    (world.client / "folder").mkdir()
    (world.client / "folder" / "f.txt").write_text("f")
    monkeypatch.chdir(world.client)
    for key, value in world.env("admin").items():
        monkeypatch.setenv(key, value)

    def no_local_vault(*_: object, **__: object) -> None:
        raise AssertionError("a command opened a local vault through a server")

    monkeypatch.setattr("labvault.vault.Vault.open", no_local_vault)
    seen = []
    # Archiving the version last, so that promote, check, approve and alias meet a live one.
    leaves = sorted(_leaves(typer.main.get_command(app)), key=lambda leaf: leaf[0][-1] == "archive")
    for path, command in leaves:
        if path[:1] in NOT_WALKED:
            continue
        args = list(path)
        for param in command.params:
            if param.required and param.param_type_name == "argument":
                args.append(_value(path, param.name, world, tmp_path))
            elif param.required:
                args += [param.opts[0], _value(path, param.name, world, tmp_path)]
        code = main(args)
        err = capsys.readouterr().err
        seen.append(" ".join(path))
        assert "Traceback" not in err, (args, err)
        assert code not in (5, 7), (args, code, err)  # no integrity or network failure on a healthy server
        if code:
            assert err.startswith("error: "), (args, code, err)
    assert {"reproduce", "pipeline run", "env show", "vault show", "object ls", "data checkout"} <= set(seen)
