"""The tracking service and the Python API, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

import labvault as lv
from labvault.entities import Artifact, Run
from labvault.errors import AmbiguousReference, Conflict, NotFound, ValidationError
from labvault.storage.objects.tree import decode_tree
from labvault.vault import Vault


@pytest.fixture(autouse=True)
def _no_open_runs():
    from labvault import fluent

    yield
    while fluent._stack:
        fluent._stack[-1].end("killed")
    for v in fluent._vaults.values():
        v.close()
    fluent._vaults.clear()


def test_start_run_records_params_metrics_artifacts(any_vault: Vault, project: Path) -> None:
    (project / "conf.yaml").write_text("lr: 0.1\n")
    (project / "model").mkdir()
    (project / "model" / "weights.bin").write_bytes(b"\x00\x01")
    (project / "model" / "sub").mkdir()
    (project / "model" / "sub" / "b.txt").write_text("b")
    (project / "tx.csv").write_text("amount\n1\n")
    any_vault.data.add("tx", project / "tx.csv")
    with lv.start_run(project="fraud", name="baseline", config="conf.yaml", inputs=["data:tx@v1"], seed=42) as run:
        assert lv.active_run() is run
        run.log_params({"depth": 4, "optimizer": "adam"})
        run.log_param("depth", "4")  # the same value again is fine
        for i in range(3):
            run.log_metric("loss", 1.0 / (i + 1))
        run.log_metrics({"auc": 0.91, "acc": 0.8}, step=7)
        run.set_tags({"team": "fraud"})
        art = run.log_artifact(project / "model")
        run.log_dict({"a": 1}, "meta.json")
        run.log_text("hello", "notes/readme.txt")
        run.log_figure(b"\x89PNG fake", "plot.png")
    assert lv.active_run() is None
    got = any_vault.runs.get(run.ref)
    assert isinstance(got, Run)
    assert got.status == "finished"
    assert got.exit_code == 0
    assert got.ended_at is not None
    assert got.project == "fraud"
    assert got.name == "baseline"
    assert got.params == {"depth": 4, "optimizer": "adam"}
    assert got.metrics == {"acc": 0.8, "auc": 0.91, "loss": pytest.approx(1 / 3)}
    assert got.tags == {"team": "fraud"}
    assert got.inputs == ("data:tx@v1",)
    assert got.seed == 42
    assert {a.name for a in got.artifacts} == {"model", "meta.json", "notes/readme.txt", "plot.png"}
    assert art.kind == "tree"
    assert art.size == 3
    tree = decode_tree(any_vault.objects.get_bytes(art.digest))
    assert {e.name for e in tree} == {"weights.bin", "sub"}
    assert all(isinstance(a, Artifact) for a in got.artifacts)
    history = any_vault.runs.history(run.id)
    assert [p.step for p in history["loss"]] == [0, 1, 2]
    assert [p.step for p in history["auc"]] == [7]
    config = got.capture["config"][0]
    assert any_vault.objects.get_bytes(lv.Digest(config["sha256"].removeprefix("sha256:"))) == b"lr: 0.1\n"
    assert got.capture["seeds"]["seeded"][0] == "random"
    with any_vault.meta.read() as conn:
        from labvault.storage.meta.repos.object_refs import iter_refs

        owned = {d.hex: k for o, d, k in iter_refs(conn) if o == run.ref}
    assert owned[art.digest.hex] == "tree"
    assert config["sha256"].removeprefix("sha256:") in owned
    assert any_vault.maintenance.fsck().clean


def test_run_ids_and_prefixes(vault: Vault) -> None:
    a = vault.runs.create(name="a", capture=False)
    assert len(a.id) == 12
    assert all(c in "0123456789abcdef" for c in a.id)
    assert a.ref == f"run:{a.id}"
    assert vault.runs.get(a.id[:6]).id == a.id
    assert vault.runs.get(f"run:{a.id}").id == a.id
    assert vault.runs.get(a.id.upper()).id == a.id
    with pytest.raises(NotFound):
        vault.runs.get("ffffff" if not a.id.startswith("ffffff") else "eeeeee")
    with pytest.raises(ValidationError):
        vault.runs.get("abc")
    with pytest.raises(ValidationError):
        vault.runs.get("run:xyz123")
    # Two runs sharing a prefix: the short prefix is ambiguous.
    from labvault.storage.meta.repos import runs as repo

    row = {"id": a.id[:6] + "000000" if not a.id.endswith("000000") else a.id[:6] + "111111"}
    with vault.meta.transaction() as conn:
        import json as _json

        from labvault.entities import utcnow

        repo.insert_run(
            conn,
            {
                **row,
                "project": "p",
                "name": "b",
                "status": "running",
                "parent_id": None,
                "user": "u",
                "host": "h",
                "started_at": utcnow(),
                "ended_at": None,
                "exit_code": None,
                "error": None,
                "seed": None,
                "inputs": "[]",
                "capture": _json.dumps({}),
                "deleted_at": None,
            },
        )
    with pytest.raises(AmbiguousReference):
        vault.runs.get(a.id[:6])


def test_params_are_immutable(any_vault: Vault) -> None:
    with lv.start_run() as run:
        run.log_param("lr", 0.1)
        run.log_param("lr", 0.1)
        with pytest.raises(Conflict) as err:
            run.log_param("lr", 0.2)
        assert err.value.exit_code == 4
    assert any_vault.runs.get(run.id).params == {"lr": 0.1}


def test_bad_input_is_refused(vault: Vault) -> None:
    with lv.start_run() as run:
        with pytest.raises(ValidationError):
            run.log_metric("loss", "high")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            run.log_metric("loss", None)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            run.log_metric("../etc", 1.0)
        with pytest.raises(ValidationError):
            run.log_param("", 1)
        with pytest.raises(ValidationError):
            run.log_artifact("does-not-exist.bin")
        with pytest.raises(ValidationError):
            run.log_text("x", "../escape.txt")
    with pytest.raises(ValidationError):
        lv.start_run(project="bad/name")
    with pytest.raises(ValidationError):
        lv.start_run(inputs=["not a ref"])
    with pytest.raises(ValidationError):
        lv.start_run(config="missing.yaml")
    assert lv.active_run() is None
    with pytest.raises(ValidationError):
        run.log_metric("loss", 1.0)  # the run ended


def test_nan_and_infinities_round_trip(any_vault: Vault) -> None:
    with lv.start_run() as run:
        run.log_metric("nan", float("nan"))
        run.log_metric("pinf", float("inf"))
        run.log_metric("ninf", float("-inf"))
        run.log_metric("zero", 0.0)
    got = any_vault.runs.get(run.id)
    assert math.isnan(got.metrics["nan"])
    assert got.metrics["pinf"] == math.inf
    assert got.metrics["ninf"] == -math.inf
    assert got.metrics["zero"] == 0.0
    assert math.isnan(any_vault.runs.history(run.id)["nan"][0].value)
    doc = any_vault.runs.export(run.id)
    assert doc["metrics"]["nan"] == "NaN"
    assert doc["metrics"]["pinf"] == "Infinity"


def test_failed_and_killed_status(vault: Vault) -> None:
    with pytest.raises(RuntimeError), lv.start_run() as failing:
        raise RuntimeError("boom")
    got = vault.runs.get(failing.id)
    assert got.status == "failed"
    assert "RuntimeError: boom" in (got.error or "")
    with pytest.raises(KeyboardInterrupt), lv.start_run() as interrupted:
        raise KeyboardInterrupt
    assert vault.runs.get(interrupted.id).status == "killed"


def test_resume_and_nested(vault: Vault) -> None:
    run = lv.start_run(name="long")
    run.log_metric("loss", 1.0)
    run.end("killed")
    with lv.start_run(run_id=run.id[:8]) as again:
        assert again.id == run.id
        again.log_metric("loss", 0.5)
        with lv.start_run(name="child", nested=True) as child:
            assert lv.active_run() is child
            child.log_metric("x", 1)
        assert lv.active_run() is again
        with pytest.raises(ValidationError):
            lv.start_run()  # not nested while one is open
    got = vault.runs.get(run.id)
    assert got.status == "finished"
    assert [p.step for p in vault.runs.history(run.id)["loss"]] == [0, 1]
    assert vault.runs.get(child.id).parent_id == run.id
    with pytest.raises(Conflict):
        lv.start_run(run_id=run.id)  # finished runs are never reopened


def test_attach_to_wrapper_run(vault: Vault, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    outer = vault.runs.create(name="wrapped", capture=False)
    monkeypatch.setenv("LABVAULT_RUN_ID", outer.id)
    monkeypatch.setenv("LABVAULT_DIR", str(vault.dir))
    monkeypatch.setenv("LABVAULT_SEED", "7")
    monkeypatch.chdir(tmp_path)  # the library finds the vault through LABVAULT_DIR
    with lv.start_run() as run:
        assert run.id == outer.id
        assert not run.owned
        assert lv.active_run() is run
        lv.log_metric("acc", 0.5)
        lv.log_param("p", 1)
        lv.set_tag("t", "v")
    got = vault.runs.get(outer.id)
    assert got.status == "running"  # the wrapper ends it, not the library
    assert got.metrics == {"acc": 0.5}
    assert got.params == {"p": 1}
    assert got.tags == {"t": "v"}
    assert got.seed == 7
    monkeypatch.delenv("LABVAULT_RUN_ID")
    assert lv.active_run() is None


def test_module_level_logging_attaches_to_the_wrapper_run(
    vault: Vault, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    outer = vault.runs.create(name="wrapped", capture=False)
    monkeypatch.setenv("LABVAULT_RUN_ID", outer.id)
    monkeypatch.setenv("LABVAULT_DIR", str(vault.dir))
    monkeypatch.chdir(tmp_path)
    lv.log_metric("acc", 0.75)  # a plain script under `labvault run`: no start_run needed
    run = lv.active_run()
    assert run is not None
    assert run.id == outer.id
    assert not run.owned
    run.__exit__(None, None, None)
    monkeypatch.delenv("LABVAULT_RUN_ID")
    got = vault.runs.get(outer.id)
    assert got.metrics == {"acc": 0.75}
    assert got.status == "running"  # the wrapper ends it


def test_module_level_logging_needs_a_run(vault: Vault) -> None:
    assert lv.active_run() is None
    with pytest.raises(ValidationError):
        lv.log_metric("x", 1.0)


def test_capture_is_recorded_and_shared(vault: Vault, project: Path) -> None:
    with lv.start_run() as a:
        print("to stdout")  # noqa: T201 - the run captures what the program prints
    with lv.start_run() as b:
        pass
    ra, rb = vault.runs.get(a.id), vault.runs.get(b.id)
    assert ra.capture["environment"] == rb.capture["environment"]
    env = json.loads(vault.objects.get_bytes(lv.Digest(ra.capture["environment"][7:])))
    assert env["python"]["version"]
    assert any(p["name"].lower() == "sqlalchemy" for p in env["packages"])
    assert ra.capture["cwd"] == str(project)
    assert any("not in a git repository" in w for w in ra.capture["warnings"])
    assert vault.objects.get_bytes(lv.Digest(ra.capture["stdout"][7:])) == b"to stdout\n"
    assert ra.user == "tester@example.com"
    assert ra.host


def test_export_document(vault: Vault, project: Path) -> None:
    (project / "c.yaml").write_text("a: 1\n")
    (project / "x.csv").write_text("a\n1\n")
    vault.data.add("x", project / "x.csv")
    with lv.start_run(config=["c.yaml"], inputs=["data:x@v1"], seed=3) as run:
        run.log_param("k", "v")
        run.log_text("t", "t.txt")
    doc = vault.runs.export(run.ref)
    assert doc["format"] == "labvault.run/1"
    assert doc["ref"] == run.ref
    assert doc["id"] == run.id
    assert doc["config"][0]["content"] == "a: 1\n"
    assert doc["inputs"][0]["ref"] == "data:x@v1"
    assert doc["inputs"][0]["manifest_sha256"].startswith("sha256:")
    assert doc["seed"] == 3
    assert doc["environment"]["python"].startswith("CPython")
    assert doc["artifacts"][0]["sha256"].startswith("sha256:")
    assert doc["started_at"].endswith("Z")
    assert set(doc["code"]) == {"commit", "branch", "remote", "dirty", "patch"}


def test_export_reports_an_input_snapshot_it_cannot_find(vault: Vault) -> None:
    vault.runs.pin_input = None  # a record written without the check (an older vault): its input is unknown here
    run = vault.runs.create(name="t", inputs=["data:x@v1"], capture=False, background_git=False)
    doc = vault.runs.export(run.ref)
    assert "no dataset" in doc["inputs"][0]["error"]  # an unknown snapshot is reported, not invented


def test_start_run_refuses_an_unknown_version_of_a_dataset(vault: Vault, project: Path) -> None:
    (project / "x.csv").write_text("a\n1\n")
    vault.data.add("x", project / "x.csv")
    with pytest.raises(NotFound, match=r"data:x@v2 does not exist"):
        vault.runs.create(name="t", inputs=["data:x@v2"], capture=False, background_git=False)
    assert vault.runs.list() == []


def test_delete_and_restore(vault: Vault) -> None:
    with lv.start_run() as run:
        run.log_text("hello", "a.txt")
    vault.runs.delete(run.id)
    assert vault.runs.get(run.id).deleted
    assert run.id not in {r.id for r in vault.runs.list()}
    assert run.id in {r.id for r in vault.runs.list(deleted=True)}
    report = vault.maintenance.gc(grace=3600)
    assert not report.deleted  # the grace period counts from the deletion
    vault.runs.restore(run.id)
    assert not vault.runs.get(run.id).deleted
    assert vault.maintenance.gc(grace=0).deleted == ()
    vault.runs.delete(run.id)
    collected = vault.maintenance.gc(grace=0)
    assert collected.deleted
    from labvault.errors import IntegrityError

    with pytest.raises(IntegrityError):
        vault.runs.restore(run.id)


def test_seed_everything_reports() -> None:
    report = lv.seed_everything(123)
    assert report["seeded"][0] == "random"
    assert set(report["unavailable"]) | set(report["seeded"]) | set(report["failed"]) >= {"random", "numpy"}
    assert "hash_randomization" in report["settings"]
    import random

    first = random.random()
    lv.seed_everything(123)
    assert random.random() == first
    with pytest.raises(ValidationError):
        lv.seed_everything(-1)


def test_sigterm_marks_killed(vault: Vault, project: Path) -> None:
    import subprocess
    import sys

    script = project / "train.py"
    script.write_text(
        "import signal, os, labvault as lv\n"
        "with lv.start_run(name='t') as run:\n"
        "    print(run.id, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=project, timeout=60)
    assert proc.returncode == -15, proc.stderr
    run_id = proc.stdout.split()[0]
    got = vault.runs.get(run_id)
    assert got.status == "killed"
    assert got.exit_code == 143


def test_public_api_names() -> None:
    for name in (
        "start_run",
        "active_run",
        "log_param",
        "log_params",
        "log_metric",
        "log_metrics",
        "log_artifact",
        "set_tag",
        "seed_everything",
    ):
        assert name in lv.__all__
        assert callable(getattr(lv, name))
    assert os.environ.get("LABVAULT_RUN_ID") is None


def test_an_unversioned_data_input_is_pinned_to_the_latest_snapshot(vault: Vault, project: Path) -> None:
    (project / "d.csv").write_text("a,b\n1,2\n")
    vault.data.add("d", project / "d.csv")
    (project / "d.csv").write_text("a,b\n1,2\n3,4\n")
    snap, _ = vault.data.add("d", project / "d.csv")
    with lv.start_run(inputs=["data:d"]) as run:
        pass
    got = vault.runs.get(run.ref)
    assert got.inputs == ("data:d@v2",)
    doc = vault.runs.export(run.ref)
    assert doc["inputs"][0]["manifest_sha256"] == str(snap.content_hash)


def test_an_unversioned_input_of_an_unknown_dataset_is_refused(vault: Vault) -> None:
    with pytest.raises(NotFound), lv.start_run(inputs=["data:nothing-here"]):
        pass


def test_history_envelope_keeps_each_range_s_extremes_on_both_databases(any_vault: Vault) -> None:
    """The run page's charts: a long history comes back as each step range's minimum and maximum."""
    with lv.start_run(project="p", vault=any_vault.root) as run:
        any_vault.runs.log_metrics(run.id, [("loss", float(i % 97), i) for i in range(5000)])
        any_vault.runs.log_metrics(run.id, [("auc", 0.5, 0), ("auc", float("nan"), 1), ("auc", 0.9, 2)])
    env = any_vault.runs.history_envelope(run.id, buckets=50)
    assert env["auc"] == [(0, 0.5), (1, None), (2, 0.9)]  # short: as it is
    loss = env["loss"]
    assert 50 <= len(loss) <= 100
    assert [s for s, _ in loss] == sorted(s for s, _ in loss)
    assert min(v for _, v in loss if v is not None) == 0.0
    assert max(v for _, v in loss if v is not None) == 96.0
