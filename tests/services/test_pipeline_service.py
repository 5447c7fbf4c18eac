"""``vault.pipelines`` from Python, on SQLite and PostgreSQL: the cache, restore, tags, tracking."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labvault.errors import Conflict
from labvault.vault import Vault

STAGES = """\
stages:
  make:
    cmd: mkdir -p out && echo "$(cat in.txt)" > out/a.txt && echo b > out/b.txt
    deps: [in.txt]
    params: [lr]
    outs: [out]
  use:
    cmd: cat out/a.txt out/b.txt > model.txt
    deps: [out]
    outs: [model.txt]
"""


def _states(reports: list) -> dict[str, str]:
    return {r.name: r.state for r in reports}


def test_run_restore_and_tag(any_vault: Vault) -> None:
    root = any_vault.root
    (root / "in.txt").write_text("one\n")
    (root / "params.yaml").write_text("lr: 0.1\n")
    (root / "labvault.yaml").write_text(STAGES)
    pipes = any_vault.pipelines
    assert _states(pipes.run(jobs=2)) == {"make": "ran", "use": "ran"}
    first = (root / "model.txt").read_text()
    assert first == "one\nb\n"
    (root / "params.yaml").write_text("lr: 0.2\n")
    decisions = {d.name: d for d in pipes.status()}
    assert decisions["make"].reasons == ["param lr 0.1 -> 0.2"]
    assert decisions["use"].state == "run"
    # `make` reruns and writes the same folder: `use` is then up to date (its dep's hash did not change)
    assert _states(pipes.run()) == {"make": "ran", "use": "up to date"}
    (root / "params.yaml").write_text("lr: 0.1\n")
    assert _states(pipes.run()) == {"make": "restored", "use": "up to date"}
    (root / "model.txt").unlink()
    assert pipes.checkout() == {"make": 0, "use": 1}
    assert (root / "model.txt").read_text() == first
    tag = pipes.tag("v1", message="first")
    assert tag["ref"] == "pipeline:v1"
    assert pipes.tag("v1", message="first")["lock"] == tag["lock"]
    (root / "params.yaml").write_text("lr: 0.3\n")
    pipes.run()
    with pytest.raises(Conflict):
        pipes.tag("v1")
    log = pipes.log()
    assert [t["ref"] for t in log["tags"]] == ["pipeline:v1"]
    assert len(log["runs"]) == 4
    stage_runs = [r for r in any_vault.runs.list() if r.parent_id]
    assert {r.tags["pipeline.status"] for r in stage_runs} == {"ran", "restored from cache"}


def test_gc_keeps_what_the_cache_points_at(vault: Vault, project: Path) -> None:
    (project / "in.txt").write_text("one\n")
    (project / "params.yaml").write_text("lr: 0.1\n")
    (project / "labvault.yaml").write_text(STAGES.replace("echo b", "date +%N"))
    vault.pipelines.run()
    (project / "params.yaml").write_text("lr: 0.2\n")
    vault.pipelines.run()
    vault.maintenance.gc(grace=0)
    assert vault.maintenance.fsck().clean
    (project / "params.yaml").write_text("lr: 0.1\n")
    shutil.rmtree(project / "out")
    assert _states(vault.pipelines.run()) == {"make": "restored", "use": "restored"}
