"""Pipelines and the rest of labvault: ``reproduce`` of a pipeline run (every stage rerun with the cache
off, compared stage by stage), pipeline versions in lineage, the per-key lock files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Cli

STAGES = """\
stages:
  prepare:
    cmd: mkdir -p data && tr a-z A-Z < raw.txt > data/clean.txt
    deps: [raw.txt]
    outs: [data/clean.txt]
  train:
    cmd: >-
      cat data/clean.txt > model.pkl && grep lr params.yaml >> model.pkl &&
      echo '{"acc": 0.75}' > metrics.json
    deps: [data/clean.txt]
    params: [train.lr]
    outs: [model.pkl]
    metrics: [metrics.json]
"""

NOISY = """\
  noisy:
    cmd: od -An -N8 -tx8 /dev/urandom > noise.txt
    deps: [model.pkl]
    outs: [noise.txt]
"""


def _git(project: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, check=True).stdout


def _project(project: Path, cli: Cli, stages: str) -> str:
    """A committed project whose pipeline has run once; the pipeline run's id."""
    _git(project, "init", "-q", "-b", "main")
    _git(project, "config", "user.email", "t@example.com")
    _git(project, "config", "user.name", "t")
    cli("init")
    (project / "raw.txt").write_text("raw data\n")
    (project / "params.yaml").write_text("train:\n  lr: 0.1\n")
    (project / "labvault.yaml").write_text(stages)
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "pipeline")
    cli("pipeline", "run")
    return _newest(cli)


def _newest(cli: Cli) -> str:
    log = json.loads(cli("pipeline", "log", "--json").stdout)
    return str(next(e for e in log if e["kind"] == "run")["id"])


def _stage_run(cli: Cli, parent: str, stage: str) -> dict[str, Any]:
    runs = json.loads(cli("runs", "list", "--json", "--filter", f"tags.pipeline.stage = '{stage}'").stdout)
    (found,) = [r for r in runs if r.get("parent") == f"run:{parent}"]
    return dict(found)


def test_reproduce_a_pipeline_run_reruns_every_stage_and_compares_each(project: Path, cli: Cli) -> None:
    run_id = _project(project, cli, STAGES)
    before = (project / "labvault.lock").read_text()
    caches = project / ".labvault" / "cache" / "pipelines"
    cached = {p.name: p.read_bytes() for p in caches.rglob("*") if p.is_file()}
    out = cli("reproduce", f"run:{run_id}", "--env", "current", "--json")
    report = json.loads(out.stdout)
    assert report["verdict"] == "reproduced"
    names = [a["artifact"] for a in report["artifacts"]]
    assert names == ["prepare: data_clean.txt", "train: model.pkl"]
    assert all(a["verdict"] == "IDENTICAL" for a in report["artifacts"])
    assert [(m["metric"], m["verdict"]) for m in report["metrics"]] == [("train: acc", "EXACT")]
    # The cache was off: both stages ran (not restored) under the rerun.
    rerun = report["reruns"][0].removeprefix("run:")
    for stage in ("prepare", "train"):
        assert _stage_run(cli, rerun, stage)["tags"]["pipeline.status"] == "ran"
    assert (project / "labvault.lock").read_text() == before  # the user's checkout is not touched
    assert {p.name: p.read_bytes() for p in caches.rglob("*") if p.is_file()} == cached  # nor its caches
    text = cli("reproduce", f"run:{run_id}", "--env", "current").stdout
    assert "prepare: data_clean.txt" in text
    assert "train: model.pkl" in text


def test_reproduce_a_pipeline_names_the_stage_that_differs(project: Path, cli: Cli) -> None:
    run_id = _project(project, cli, STAGES + NOISY)
    out = cli("reproduce", f"run:{run_id}", "--env", "current", "--json", expect=1)
    report = json.loads(out.stdout)
    assert report["verdict"] == "not reproduced"
    different = [a["artifact"] for a in report["artifacts"] if a["verdict"] == "DIFFERENT"]
    assert different == ["noisy: noise.txt"]


def test_reproduce_a_stage_run_compares_that_stage(project: Path, cli: Cli) -> None:
    run_id = _project(project, cli, STAGES)
    train = _stage_run(cli, run_id, "train")
    report = json.loads(cli("reproduce", f"run:{train['id']}", "--env", "current", "--json").stdout)
    assert report["verdict"] == "reproduced"
    assert [a["artifact"] for a in report["artifacts"]] == ["model.pkl"]


def test_runs_and_model_versions_point_to_their_pipeline_version(project: Path, cli: Cli) -> None:
    run_id = _project(project, cli, STAGES)
    train = _stage_run(cli, run_id, "train")
    definition = train["tags"]["pipeline.definition"]
    assert definition.startswith("sha256:")
    assert "pipeline.tag" not in train["tags"]
    untagged = json.loads(cli("lineage", f"run:{run_id}", "--json").stdout)
    assert {n["ref"] for n in untagged["nodes"] if n["kind"] == "pipeline"} == {definition}
    cli("pipeline", "tag", "v1", "-m", "first")  # a tag made after the run is found through the definition
    cli("models", "register", "demo/clf", "--from", f"run:{train['id']}", "--artifact", "model.pkl")
    lineage = json.loads(cli("lineage", "demo/clf@0.1.0", "--json").stdout)
    pipelines = {n["ref"] for n in lineage["nodes"] if n["kind"] == "pipeline"}
    assert pipelines == {"pipeline:v1"}
    assert {"from": "pipeline:v1", "to": f"run:{train['id']}", "kind": "pipeline"} in lineage["edges"]
    # A run made once the tag exists records it.
    (project / "raw.txt").write_text("other data\n")
    cli("pipeline", "run")
    newest = _newest(cli)
    assert _stage_run(cli, newest, "prepare")["tags"]["pipeline.tag"] == "pipeline:v1"
    tree = cli("lineage", f"run:{newest}").stdout
    assert "pipeline:v1" in tree
    log = json.loads(cli("pipeline", "log", "--json").stdout)
    assert [e["versions"] for e in log if e["kind"] == "run"] == [["pipeline:v1"], ["pipeline:v1"]]
    assert f"run:{newest}" in cli("pipeline", "log").stdout.splitlines()[1]
    assert cli("pipeline", "log").stdout.splitlines()[1].endswith("pipeline:v1")


def test_key_lock_files_do_not_accumulate(project: Path, cli: Cli) -> None:
    _project(project, cli, STAGES)
    locks = project / ".labvault" / "locks" / "pipeline"
    assert list(locks.iterdir()) == []
    (locks / f"{'0' * 64}.lock").write_bytes(b"")  # a run killed while it held a key
    (project / "raw.txt").write_text("changed\n")
    cli("pipeline", "run")
    assert list(locks.iterdir()) == []


def test_reproduce_names_why_the_pipeline_cannot_run_in_the_workspace(project: Path, cli: Cli) -> None:
    (project / ".gitignore").write_text("raw.txt\n")  # the raw data is not in git: the clone lacks it
    run_id = _project(project, cli, STAGES)
    out = cli("reproduce", f"run:{run_id}", "--env", "current", "--json", expect=1)
    report = json.loads(out.stdout)
    assert report["verdict"] == "not reproduced"
    assert "raw.txt" in report["causes"][0]
    assert "Traceback" not in out.stderr
    runs = json.loads(cli("runs", "list", "--json", "--filter", "status = 'running'").stdout)
    assert runs == []  # the rerun was ended


def test_reproduce_compares_the_stages_that_were_up_to_date_too(project: Path, cli: Cli) -> None:
    """A stage the pipeline run found up to date is compared against the run that made its outputs:
    a noisy stage left alone by the run still makes the reproduction fail."""
    aside = "  noisy:\n    cmd: od -An -N8 -tx8 /dev/urandom > noise.txt\n    deps: [raw.txt]\n    outs: [noise.txt]\n"
    _project(project, cli, STAGES + aside)
    (project / "params.yaml").write_text("train:\n  lr: 0.05\n")
    _git(project, "commit", "-q", "-am", "lr 0.05")
    reports = json.loads(cli("pipeline", "run", "--json").stdout)
    states = {r["stage"]: r["state"] for r in reports}
    assert states == {"prepare": "up to date", "train": "ran", "noisy": "up to date"}
    run_id = _newest(cli)
    out = cli("reproduce", f"run:{run_id}", "--env", "current", "--json", expect=1)
    report = json.loads(out.stdout)
    assert report["verdict"] == "not reproduced"
    verdicts = {a["artifact"]: a["verdict"] for a in report["artifacts"]}
    assert verdicts == {
        "noisy: noise.txt": "DIFFERENT",
        "prepare: data_clean.txt": "IDENTICAL",
        "train: model.pkl": "IDENTICAL",
    }
    assert [(m["metric"], m["verdict"]) for m in report["metrics"]] == [("train: acc", "EXACT")]
