"""``vault.lineage.diff``: two versions trained on two snapshots, with a schema and a config change."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from labvault import Vault
from labvault.errors import NotFound, ValidationError
from labvault.services.lineage import LineageDiff


def _git(project: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


def _train(vault: Vault, project: Path, data: str, *, seed: int, accuracy: float, params: dict[str, object]) -> str:
    run = vault.runs.create(
        name="train", inputs=[data], config=["conf.yaml"], seed=seed, capture=True, background_git=False
    )
    vault.runs.log_params(run.id, params)
    vault.runs.log_metrics(run.id, [("accuracy", accuracy, 0)])
    (project / "model.bin").write_bytes(f"{data}{seed}".encode())
    vault.runs.log_artifact(run.id, project / "model.bin", name="model")
    vault.runs.finish(run.id)
    return run.id


@pytest.fixture
def two_versions(any_vault: Vault, project: Path) -> tuple[str, str]:
    """shop/ranker@0.1.0 on data:tx@v1, 0.2.0 on data:tx@v2 (a column added, amounts shifted), with
    conf.yaml's lr changed and train.py edited in a new commit between them."""
    vault = any_vault
    _git(project, "init", "-q", "-b", "main")
    _git(project, "config", "user.email", "t@example.com")
    _git(project, "config", "user.name", "t")
    (project / ".gitignore").write_text(".labvault/\nmodel.bin\ntx/\n")
    (project / "train.py").write_text("print('v1')\n")
    (project / "conf.yaml").write_text("lr: 0.1\nlayers: {n: 2, act: relu}\n")
    (project / "tx").mkdir()
    (project / "tx" / "rows.csv").write_text("amount\n" + "".join(f"{i % 50}\n" for i in range(500)))
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "first")
    v1_data, _ = vault.data.add("tx", project / "tx")
    first = _train(vault, project, v1_data.ref, seed=1, accuracy=0.8, params={"epochs": 10})
    (project / "tx" / "rows.csv").write_text("amount,country\n" + "".join(f"{i % 50 + 40},fr\n" for i in range(600)))
    v2_data, _ = vault.data.add("tx", project / "tx")
    (project / "conf.yaml").write_text("lr: 0.2\nlayers: {n: 2, act: relu}\n")
    (project / "train.py").write_text("print('v2')\n")
    _git(project, "commit", "-qam", "second")
    second = _train(vault, project, v2_data.ref, seed=2, accuracy=0.9, params={"epochs": 20})
    a, _ = vault.registry.register("shop/ranker", run=f"run:{first}", artifact="model")
    b, _ = vault.registry.register("shop/ranker", run=f"run:{second}", artifact="model", bump="minor")
    return a.ref, b.ref


def test_the_diff_names_the_schema_change_and_the_config_change(
    any_vault: Vault, two_versions: tuple[str, str]
) -> None:
    a, b = two_versions
    diff = any_vault.lineage.diff(a, b)
    assert isinstance(diff, LineageDiff)
    assert (diff.a, diff.b) == ("shop/ranker@0.1.0", "shop/ranker@0.2.0")
    (data,) = diff.data
    assert (data.dataset, data.a, data.b) == ("tx", "data:tx@v1", "data:tx@v2")
    assert data.verdict == "schema changed"
    assert "added country" in data.schema
    assert data.records == (500, 600)
    assert data.files_modified == 1
    assert data.max_psi is not None
    assert data.max_psi > 0.2
    assert data.max_psi_column == "amount"
    config = {(c.source, c.key): (c.a, c.b, c.change) for c in diff.config}
    assert config[("conf.yaml", "lr")] == (0.1, 0.2, "changed")
    assert config[("params", "epochs")] == (10, 20, "changed")
    assert ("conf.yaml", "layers.n") not in config  # unchanged keys are not listed
    assert (diff.code.commits, diff.code.commits_back) == (1, 0)
    assert diff.code.files == (("M", "conf.yaml"), ("M", "train.py"))
    assert diff.code.range is not None
    assert {s.name: (s.a, s.b) for s in diff.seeds}["seed"] == (1, 2)
    assert [(m.name, m.a, m.b) for m in diff.metrics] == [("accuracy", 0.8, 0.9)]
    assert diff.metrics[0].delta == pytest.approx(0.1)
    assert diff.environment == ()  # the same process, the same packages
    assert diff.changed == {
        "data": True,
        "code": True,
        "config": True,
        "environment": False,
        "seeds": True,
        "metrics": True,
    }
    doc = json.loads(json.dumps(diff.to_json()))
    assert doc["data"][0]["schema"] == ["added country"]
    assert {"source": "conf.yaml", "key": "lr", "a": 0.1, "b": 0.2, "change": "changed"} in doc["config"]


def test_a_version_against_itself_and_runs(any_vault: Vault, two_versions: tuple[str, str]) -> None:
    a, _ = two_versions
    same = any_vault.lineage.diff(a, a)
    assert not any(same.changed.values())
    assert same.data[0].verdict == "no change"
    run = same.run_a
    by_run = any_vault.lineage.diff(run, "shop/ranker@0.2.0")
    assert by_run.a == run
    assert by_run.changed["data"]
    backwards = any_vault.lineage.diff("shop/ranker@0.2.0", run)
    assert (backwards.code.commits, backwards.code.commits_back) == (0, 1)


def test_a_commit_missing_from_the_repository_is_said(
    any_vault: Vault, project: Path, two_versions: tuple[str, str]
) -> None:
    subprocess.run(["rm", "-rf", str(project / ".git")], check=True)
    diff = any_vault.lineage.diff(*two_versions)
    assert diff.code.changed
    assert diff.code.files_changed is None
    assert diff.code.note is not None
    assert "not in the repository" in diff.code.note


def test_bad_input(any_vault: Vault, two_versions: tuple[str, str]) -> None:
    a, _ = two_versions
    with pytest.raises(ValidationError, match="model versions or runs"):
        any_vault.lineage.diff(a, "data:tx@v1")
    with pytest.raises(NotFound):
        any_vault.lineage.diff(a, "shop/ranker@9.9.9")
    with pytest.raises(NotFound):
        any_vault.lineage.diff("run:abcdef123456", a)


def _environment(vault: Vault, run_id: str, doc: object) -> None:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    digest = vault.objects.put_bytes(data)
    vault.runs.update_capture(run_id, {"environment": str(digest)}, refs=[(digest, "blob")])


def test_packages_changed_and_an_unreadable_environment(vault: Vault, project: Path) -> None:
    ids = []
    for _ in range(3):
        run = vault.runs.create(name="train", capture=False, background_git=False)
        vault.runs.finish(run.id)
        ids.append(run.id)
    base = {"python": {"version": "3.11.7"}, "packages": [{"name": "numpy", "version": "1.26.4"}]}
    _environment(vault, ids[0], base)
    _environment(
        vault,
        ids[1],
        {
            "python": {"version": "3.12.1"},
            "packages": [{"name": "numpy", "version": "2.0.0"}, {"name": "rich", "version": "13.7.1"}],
        },
    )
    _environment(vault, ids[2], b"[" * 200_000)  # not a document: too deep to decode
    diff = vault.lineage.diff(ids[0], ids[1])
    assert {(p.name, p.a, p.b) for p in diff.environment} == {
        ("python", "3.11.7", "3.12.1"),
        ("numpy", "1.26.4", "2.0.0"),
        ("rich", None, "13.7.1"),
    }
    unreadable = vault.lineage.diff(ids[0], ids[2])
    assert unreadable.environment == ()
    assert unreadable.environment_note == f"run:{ids[2]} recorded no readable environment"
