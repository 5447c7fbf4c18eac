"""Reproduce units: tolerances from labvault.yaml, metric and artifact judging, environment drift, the record."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from labvault.entities import Run
from labvault.errors import Conflict, NotFound, ValidationError
from labvault.services.reproduce.compare import compare_artifacts, compare_metrics
from labvault.services.reproduce.envbuild import requirements
from labvault.services.reproduce.environment import environment_drift
from labvault.services.reproduce.record import read_recipe
from labvault.services.reproduce.service import expand_model_shorthand
from labvault.services.reproduce.settings import Tolerance, Tolerances, load_tolerances
from labvault.vault import Vault


def _run(metrics: dict[str, float] | None = None, **fields: object) -> Run:
    base: dict[str, object] = {
        "id": "a" * 12,
        "project": "p",
        "name": "n",
        "status": "finished",
        "started_at": datetime(2026, 1, 1, tzinfo=UTC),
        "metrics": metrics or {},
        "exit_code": 0,
    }
    return Run(**{**base, **fields})  # type: ignore[arg-type]


def test_tolerances_from_labvault_yaml(project: Path) -> None:
    (project / "labvault.yaml").write_text(
        "models: {}\n"
        "reproduce:\n"
        "  rtol: 0.01\n"
        "  metrics:\n"
        "    auc: {atol: 1e-6}\n"
        "  ignore_metrics: [train_seconds]\n"
        "  ignore_artifacts: [logs]\n"
    )
    t = load_tolerances(project, ignore_metrics=["extra"])
    assert t.default == Tolerance(rtol=0.01, atol=0.0)
    assert t.for_metric("auc") == Tolerance(rtol=0.01, atol=1e-6)  # YAML's 1e-6 text is a number here
    assert t.ignore_metrics == {"train_seconds", "extra"}
    assert t.ignore_artifacts == {"logs"}
    # The command line speaks for every metric.
    assert load_tolerances(project, atol=0.5).for_metric("auc") == Tolerance(rtol=0.01, atol=0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("reproduce:\n  rtol: -1\n", "labvault.yaml:2: reproduce.rtol must be a finite number >= 0"),
        ("reproduce:\n  atol: .nan\n", "reproduce.atol must be a finite number >= 0"),
        ("reproduce:\n  rtl: 1\n", "unknown key 'rtl'"),
        ("reproduce:\n  metrics: {auc: 1}\n", "reproduce.metrics.auc must be {rtol: R, atol: A}"),
        ("reproduce:\n  ignore_metrics: train\n", "ignore_metrics must be a list of names"),
        ("reproduce: [1]\n", "labvault.yaml:1: reproduce must be a mapping"),
    ],
)
def test_bad_settings_are_usage_errors(project: Path, text: str, message: str) -> None:
    (project / "labvault.yaml").write_text(text)
    with pytest.raises(ValidationError) as err:
        load_tolerances(project)
    assert message in err.value.message
    assert err.value.exit_code == 2


def test_a_negative_rtol_on_the_command_line_is_refused(project: Path) -> None:
    with pytest.raises(ValidationError, match="--rtol must be a finite number >= 0"):
        load_tolerances(project, rtol=-1)


def test_metrics_exact_within_tolerance_different() -> None:
    recorded = _run({"auc": 0.9, "loss": 0.5, "f1": 0.7, "nan": math.nan, "only_old": 1.0})
    rerun = _run({"auc": 0.9, "loss": 0.5000001, "f1": 0.71, "nan": math.nan, "only_new": 1.0})
    t = Tolerances(default=Tolerance(atol=1e-3), ignore_metrics=frozenset({"ignored"}))
    verdicts = {c.key: c.verdict for c in compare_metrics(recorded, rerun, t)}
    assert verdicts == {
        "auc": "EXACT",
        "loss": "WITHIN TOLERANCE",
        "f1": "DIFFERENT",
        "nan": "EXACT",
        "only_old": "DIFFERENT",
        "only_new": "DIFFERENT",
    }
    assert {c.key: c.verdict for c in compare_metrics(recorded, rerun, Tolerances())}["loss"] == "DIFFERENT"
    per_metric = Tolerances(metrics={"f1": Tolerance(rtol=0.02)})
    assert {c.key: c.verdict for c in compare_metrics(recorded, rerun, per_metric)}["f1"] == "WITHIN TOLERANCE"


def test_folder_artifacts_are_compared_file_by_file(vault: Vault, project: Path) -> None:
    (project / "a" / "sub").mkdir(parents=True)
    (project / "a" / "sub" / "x.txt").write_text("x")
    (project / "a" / "y.txt").write_text("y")
    first = vault.runs.create(command=["x"])
    vault.runs.log_artifact(first.id, project / "a", name="plots")
    (project / "a" / "y.txt").write_text("changed")
    second = vault.runs.create(command=["x"])
    vault.runs.log_artifact(second.id, project / "a", name="plots")
    vault.runs.log_bytes(second.id, b"log", name="logs")
    checks = compare_artifacts(vault.objects, vault.runs.get(first.id), vault.runs.get(second.id), frozenset())
    assert [(c.name, c.verdict) for c in checks] == [
        ("logs", "DIFFERENT"),
        ("plots/sub/x.txt", "IDENTICAL"),
        ("plots/y.txt", "DIFFERENT"),
    ]
    ignored = compare_artifacts(vault.objects, vault.runs.get(first.id), vault.runs.get(second.id), frozenset({"logs"}))
    assert [c.name for c in ignored] == ["plots/sub/x.txt", "plots/y.txt"]


def test_environment_drift_names_packages_and_python() -> None:
    recorded = {
        "python": {"version": "3.11.9"},
        "packages": [
            {"name": "numpy", "version": "1.26.4"},
            {"name": "torch", "version": "2.3.0"},
            {"name": "labvault", "version": "0.1.0"},
        ],
    }
    current = {
        "python": {"version": "3.11.10"},
        "packages": [
            {"name": "NumPy", "version": "2.0.0"},
            {"name": "rich", "version": "13.7.1"},
            {"name": "labvault", "version": "0.2.0"},
        ],
    }
    drift = environment_drift(recorded, current)
    assert drift.python == ("3.11.9", "3.11.10")
    assert drift.packages() == ["numpy 1.26.4 -> 2.0.0", "+rich==13.7.1", "-torch==2.3.0"]
    assert environment_drift(recorded, recorded).empty


def test_the_recipe_restores_the_recorded_variables_and_paths() -> None:
    run = _run(
        seed=7,
        capture={
            "command": ["python", "train.py"],
            "cwd": "/p/src",
            "pythonhashseed": "7",
            "seeds": {"settings": {"threads": {"OMP_NUM_THREADS": "2"}, "cublas_workspace_config": ":4096:8"}},
            "git": {"commit": "c" * 40, "root": "/p", "left_out": {"untracked": [{"path": "../x", "sha256": "s"}]}},
            "config": [
                {"path": "../configs/run.yaml", "sha256": "sha256:" + "1" * 64},
                {"path": "/etc/outside.yaml", "sha256": "sha256:" + "2" * 64},
            ],
        },
    )
    env = {"env": {"MKL_NUM_THREADS": "1", "PATH": "/x", "CUDA_VISIBLE_DEVICES": "0", "TF_DETERMINISTIC_OPS": "1"}}
    recipe = read_recipe(run, env)
    assert recipe.cwd == "src"
    assert dict(recipe.variables) == {
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "LABVAULT_SEED": "7",
        "MKL_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "2",
        "PYTHONHASHSEED": "7",
        "TF_DETERMINISTIC_OPS": "1",
    }
    assert [(c.path, c.project_path) for c in recipe.configs] == [
        ("../configs/run.yaml", "configs/run.yaml"),
        ("/etc/outside.yaml", None),
    ]
    assert recipe.untracked == ()  # a recorded path that climbs out of the project is dropped


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"status": "running"}, Conflict, "still running"),
        ({"capture": {}}, ValidationError, "recorded no command"),
        ({"capture": {"command": ["x"], "git": None}}, ValidationError, "recorded no git commit"),
        (
            {"capture": {"command": ["x"], "git": {"commit": "--orphan=x", "root": "/p"}}},
            ValidationError,
            "malformed commit",
        ),
    ],
)
def test_runs_that_cannot_be_rerun_say_why(fields: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        read_recipe(_run(**fields), None)


def test_requirements_keep_each_recorded_package_on_one_line() -> None:
    doc = {
        "packages": [
            {"name": "ok", "version": "1.0"},
            {"name": "evil", "version": "1.0\n--index-url http://x"},
            {"name": "newline", "version": "1.0\n"},
            {"name": "spaced", "version": "1.0 ; python_version<'3'"},
            {"name": "labvault", "version": "0.1.0"},
            {"name": "vcs", "version": "2", "source": {"vcs": "git", "url": "https://h/r.git", "commit": "abc"}},
            {"name": "mine", "version": "3", "source": {"url": "file:///p", "editable": True}},
        ]
    }
    lines, skipped = requirements(doc)
    assert lines == ["ok==1.0", "vcs @ git+https://h/r.git@abc"]
    assert [s.split(" ")[0] for s in skipped] == ["evil", "newline", "spaced", "mine==3"]


def test_the_python_api_returns_a_frozen_report(vault: Vault, project: Path) -> None:
    import dataclasses
    import subprocess
    import sys

    for args in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=project, check=True)
    (project / "job.py").write_text("open('out.txt', 'w').write('same every time')\n")
    subprocess.run(["git", "add", "job.py"], cwd=project, check=True)
    subprocess.run(["git", "commit", "-qm", "job"], cwd=project, check=True)
    run = vault.runs.create(command=[sys.executable, "job.py"], cwd=project)
    subprocess.run([sys.executable, "job.py"], cwd=project, check=True)
    vault.runs.log_artifact(run.id, project / "out.txt", role="output")
    vault.runs.finish(run.id, exit_code=0)

    report = vault.reproduce(run.ref, env="current")

    assert report.reproduced, (report.causes, report.artifacts, report.exit_codes)
    assert (report.verdict, report.exit_code) == ("reproduced", 0)
    assert [(a.name, a.verdict) for a in report.artifacts] == [("out.txt", "IDENTICAL")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.verdict = "x"  # type: ignore[misc]


def test_workspace_writes_refuse_symlinks_and_escapes(tmp_path: Path) -> None:
    from labvault.errors import IntegrityError
    from labvault.services.reproduce.files import write_contained

    root = tmp_path / "ws"
    (root / "configs").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "linked").symlink_to(outside)
    (root / "configs" / "run.yaml").symlink_to(outside / "target.yaml")
    for rel in ("linked/run.yaml", "configs/run.yaml", "../escape.yaml", "/etc/x.yaml"):
        with pytest.raises(IntegrityError):
            write_contained(root, rel, b"x")
    assert list(outside.iterdir()) == []
    write_contained(root, "configs/new/run.yaml", b"ok")
    assert (root / "configs" / "new" / "run.yaml").read_bytes() == b"ok"


@pytest.mark.parametrize(
    ("ref", "models", "expected"),
    [
        ("@1.2.0", ["proj/clf", "other/x"], "proj/clf@1.2.0"),
        ("@prod", ["proj/clf"], "proj/clf@prod"),
        ("@1.2.0", ["proj/a", "proj/b"], ValidationError("@1.2.0 is ambiguous")),
        ("@1.2.0", ["other/x"], NotFound("no model in project proj")),
        ("@", ["proj/clf"], ValidationError("not a version or alias")),
        ("@a/b", ["proj/clf"], ValidationError("not a version or alias")),
        ("@bad alias!", ["proj/clf"], ValidationError("invalid alias")),
    ],
)
def test_the_model_shorthand_names_the_default_projects_single_model(
    ref: str, models: list[str], expected: str | Exception
) -> None:
    if isinstance(expected, str):
        assert expand_model_shorthand(ref, project="proj", models=models) == expected
        return
    with pytest.raises(type(expected), match=str(expected)) as info:
        expand_model_shorthand(ref, project="proj", models=models)
    assert info.value.hint


def test_a_recorded_environment_nested_too_deep_is_unreadable_not_a_crash(vault: Vault) -> None:
    from labvault.services.reproduce.environment import load_environment

    digest = vault.objects.put_bytes(b"[" * 100_000 + b"]" * 100_000)
    assert load_environment(vault.objects, digest) is None
