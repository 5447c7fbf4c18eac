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


class ScratchExecutor:
    """An executor that shares no folder with the runner, as a Dask worker: it materialises the deps
    from the object store into a scratch folder, runs the command there, stores the outputs and
    returns their hashes (the contract of services/pipelines/executor.py)."""

    def __init__(self, vault: Vault, scratch: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.vault = vault
        self.scratch = scratch
        self.pool = ThreadPoolExecutor(2)
        self.seen: list[dict[str, str]] = []

    def submit(self, job):  # type: ignore[no-untyped-def]
        return self.pool.submit(self._run, job)

    def _run(self, job):  # type: ignore[no-untyped-def]
        import subprocess
        import time

        from labvault.services.pipelines.executor import StageOutcome
        from labvault.services.pipelines.hashing import HashCache
        from labvault.services.pipelines.outputs import restore_output, store_output

        self.seen.append(dict(job.deps))
        work = self.scratch / job.name
        work.mkdir(parents=True)
        hashes = HashCache(work, self.vault.dir)
        for path, digest in job.deps.items():
            kind = "dir" if self.vault.pipelines.inputs.is_tree(digest) else "file"
            restore_output(self.vault.objects, work, self.vault.dir, hashes, path, digest, kind)
        started = time.time()
        done = subprocess.run(["sh", "-c", job.cmd], cwd=work / job.wdir, capture_output=True, text=True, check=False)
        outs = {}
        with self.vault.objects.batch():
            for out in job.outs:
                outs[out] = store_output(self.vault.objects, work, self.vault.dir, out)[0]
        return StageOutcome(job.name, done.returncode, outs, done.stdout, started, time.time(), worker="scratch")

    def cancel_all(self) -> None:
        pass

    def close(self) -> None:
        self.pool.shutdown()


def test_an_executor_without_a_shared_folder(vault: Vault, project: Path, tmp_path: Path) -> None:
    (project / "in.txt").write_text("one\n")
    (project / "params.yaml").write_text("lr: 0.1\n")
    (project / "labvault.yaml").write_text(STAGES)
    executor = ScratchExecutor(vault, tmp_path / "scratch")
    assert _states(vault.pipelines.run(executor=executor)) == {"make": "ran", "use": "ran"}
    assert set(executor.seen[0]) == {"in.txt", "params.yaml"}  # the params file travels as a dep
    assert executor.seen[0]["in.txt"] == vault.pipelines.status()[0].deps["in.txt"]
    assert (project / "model.txt").read_text() == "one\nb\n"  # brought back from the object store
    assert not (tmp_path / "scratch" / "make" / "model.txt").exists()
    assert {d.state for d in vault.pipelines.status()} == {"up to date"}


FLAGS = """\
stages:
  a:
    cmd: date +%N > a.txt
    outs: [a.txt]
  b:
    cmd: cat a.txt > b.txt
    deps: [a.txt]
    outs: [b.txt]
  c:
    cmd: cat b.txt > c.txt
    deps: [b.txt]
    outs: [c.txt]
  stamp:
    cmd: date +%N > stamp.txt
    outs: [stamp.txt]
    always_changed: true
  fixed:
    cmd: date +%N > sub/fixed.txt
    wdir: sub
    outs: [fixed.txt]
    frozen: true
"""


def test_targets_downstream_frozen_always_changed_and_wdir(vault: Vault, project: Path) -> None:
    (project / "sub").mkdir()
    (project / "labvault.yaml").write_text(FLAGS.replace("> sub/fixed.txt", "> fixed.txt"))
    pipes = vault.pipelines
    assert set(_states(pipes.run()).values()) == {"ran"}
    fixed = (project / "sub" / "fixed.txt").read_text()
    again = _states(pipes.run())
    assert again["stamp"] == "ran"  # always_changed
    assert {k: v for k, v in again.items() if k != "stamp"} == dict.fromkeys(("a", "b", "c", "fixed"), "up to date")
    # a target runs with its upstream only; --force reruns the target, not its upstream
    assert _states(pipes.run(["b"], force=True)) == {"a": "up to date", "b": "ran"}
    # --downstream: the target and what depends on it
    assert list(_states(pipes.run(["b"], downstream=True, force=True))) == ["b", "c"]
    # frozen: never rerun, but its outputs are restored when missing
    (project / "sub" / "fixed.txt").unlink()
    assert _states(pipes.run(["fixed"])) == {"fixed": "restored"}
    assert (project / "sub" / "fixed.txt").read_text() == fixed
    assert {d.name: d.state for d in pipes.status(["fixed"])} == {"fixed": "frozen"}
