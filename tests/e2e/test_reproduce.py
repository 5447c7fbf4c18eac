"""``labvault reproduce`` end to end: a seeded training script rerun after the checkout moved on."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labvault.refs import Digest
from labvault.vault import Vault
from tests.e2e.conftest import Cli

# A logistic regression trained by plain-Python gradient descent: random initial weights from the
# seed, data from data/train.csv, learning rate and epochs from the config (not in git).
TRAIN = """\
import json, os, random
import labvault as lv

cfg = dict(line.split(": ") for line in open("configs/run.yaml").read().splitlines() if line)
rng = random.Random(int(os.environ["LABVAULT_SEED"]))
rows = [list(map(float, line.split(","))) for line in open("data/train.csv").read().split()]
w = [rng.gauss(0, 1) for _ in range(len(rows[0]))]
lr, epochs = float(cfg["lr"]), int(cfg["epochs"])
for _ in range(epochs):
    for *x, y in rows:
        z = w[-1] + sum(wi * xi for wi, xi in zip(w, x))
        p = 1 / (1 + 2.718281828459045 ** -max(-30.0, min(30.0, z)))
        w = [wi - lr * (p - y) * xi for wi, xi in zip(w, x)] + [w[-1] - lr * (p - y)]
correct = sum((w[-1] + sum(wi * xi for wi, xi in zip(w, x)) > 0) == (y == 1) for *x, y in rows)
with open("model.json", "w") as f:
    json.dump({"weights": w}, f)
with lv.start_run() as run:
    run.log_metric("accuracy", correct / len(rows))
    run.log_metric("final_weight", w[0])
"""


def _git(project: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, check=True)
    return out.stdout


def _data(seed: int) -> str:
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(60):
        a, b = rng.uniform(-2, 2), rng.uniform(-2, 2)
        lines.append(f"{a:.4f},{b:.4f},{1 if a + 0.5 * b > 0 else 0}")
    return "\n".join(lines) + "\n"


def _state(project: Path) -> tuple[str, dict[str, str]]:
    """``git status`` and the sha256 of every file outside .git and the vault."""
    files = {
        str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(project.rglob("*"))
        if p.is_file() and ".git" not in p.parts and ".labvault" not in p.parts
    }
    return _git(project, "status", "--porcelain=v1", "--untracked-files=all"), files


def _repository(project: Path, cli: Cli) -> None:
    _git(project, "init", "-q", "-b", "main")
    _git(project, "config", "user.email", "t@example.com")
    _git(project, "config", "user.name", "t")
    cli("init")


def _run_id(out: subprocess.CompletedProcess[str]) -> str:
    return out.stderr.split("run:")[1].split()[0]


def _script(project: Path, cli: Cli, code: str, *run_args: str, commit: bool = True) -> str:
    """Commit ``code`` as job.py and run it with ``labvault run``; returns the run id."""
    (project / "job.py").write_text(code)
    if commit:
        _git(project, "add", "-A")
        _git(project, "commit", "-qm", "job")
    return _run_id(cli("run", *run_args, "--", sys.executable, "job.py"))


@pytest.fixture
def trained(project: Path, cli: Cli) -> str:
    """A project whose seeded training run was recorded by ``labvault run``; returns the run id."""
    _repository(project, cli)
    (project / "train.py").write_text(TRAIN)
    (project / ".gitignore").write_text(".labvault/\nconfigs/\n")  # the config is ignored by git
    (project / "configs").mkdir()
    (project / "configs" / "run.yaml").write_text("lr: 0.1\nepochs: 20\n")
    (project / "data").mkdir()
    (project / "data" / "train.csv").write_text(_data(1))
    cli("data", "add", "train", "data/train.csv")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "train")
    (project / "train.py").write_text(TRAIN + "# uncommitted edit, recorded in the patch\n")
    out = cli(
        "run",
        "--config",
        "configs/run.yaml",
        "--input",
        "data:train",
        "--output",
        "model.json",
        "--seed",
        "7",
        "--",
        sys.executable,
        "train.py",
    )
    return _run_id(out)


def _reproduce(cli: Cli, *args: str, expect: int) -> dict[str, object]:
    out = cli("reproduce", *args, "--json", expect=expect, timeout=300)
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict)
    return doc


def test_reproduce_after_the_checkout_moved_on(project: Path, cli: Cli, trained: str) -> None:
    # The checkout moves on: a new commit, the data overwritten, the config edited, the tree dirty.
    (project / "train.py").write_text(TRAIN.replace("rng.gauss(0, 1)", "rng.gauss(0, 2)"))
    _git(project, "commit", "-qam", "moved on")
    (project / "data" / "train.csv").write_text(_data(2))
    (project / "configs" / "run.yaml").write_text("lr: 0.5\nepochs: 3\n")
    (project / "notes.txt").write_text("untracked\n")
    (project / "train.py").write_text("dirty\n")
    before = _state(project)

    doc = _reproduce(cli, trained, expect=0)

    assert doc["verdict"] == "reproduced", doc
    assert [(a["artifact"], a["verdict"]) for a in doc["artifacts"]] == [("model.json", "IDENTICAL")]  # type: ignore[index]
    assert {m["metric"]: m["verdict"] for m in doc["metrics"]} == {"accuracy": "EXACT", "final_weight": "EXACT"}  # type: ignore[index]
    assert doc["variables"]["LABVAULT_SEED"] == "7"  # type: ignore[index]
    assert _state(project) == before  # the user's files and git status are untouched
    rerun = doc["reruns"][0]  # type: ignore[index]
    shown = json.loads(cli("runs", "show", rerun, "--json").stdout)
    assert shown["tags"] == {"reproduces": f"run:{trained}", "reproduce_verdict": "reproduced"}
    assert {a["name"] for a in shown["artifacts"]} >= {"model.json", "reproduce.md", "reproduce.json"}
    original = json.loads(cli("runs", "show", trained, "--json").stdout)
    assert original["reproductions"] == [{"ref": rerun, "verdict": "reproduced"}]
    assert f"{rerun} (reproduced)" in cli("runs", "show", trained).stdout


def test_an_undeclared_input_that_changed_is_named(project: Path, cli: Cli) -> None:
    _repository(project, cli)
    (project / "labvault.yaml").write_text("capture:\n  max_untracked_size: 100\n")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "settings")
    (project / "extra.txt").write_text("x" * 200)  # untracked and large: recorded without its bytes
    code = "open('out.txt', 'w').write(str(len(open('extra.txt').read())))\n"
    run_id = _script(project, cli, code, "--output", "out.txt", commit=False)
    doc = _reproduce(cli, run_id, expect=0)  # unchanged: brought from the checkout, sha256 verified
    (project / "extra.txt").write_text("y" * 300)

    doc = _reproduce(cli, run_id, expect=1)

    assert doc["verdict"] == "not reproduced"
    assert doc["causes"][0].startswith("undeclared input: extra.txt")  # type: ignore[index]
    assert "has changed" in doc["causes"][0]  # type: ignore[index]


def test_twice_names_nondeterminism(project: Path, cli: Cli) -> None:
    _repository(project, cli)
    run_id = _script(project, cli, "import os\nopen('out.bin', 'wb').write(os.urandom(16))\n", "--output", "out.bin")

    doc = _reproduce(cli, run_id, "--twice", expect=1)

    assert len(doc["reruns"]) == 2  # type: ignore[arg-type]
    assert any(c.startswith("nondeterminism") and "out.bin" in c for c in doc["causes"])  # type: ignore[union-attr]


def test_a_commit_that_is_gone_is_exit_3(project: Path, cli: Cli) -> None:
    _repository(project, cli)
    _script(project, cli, "print(1)\n")
    _git(project, "checkout", "-qb", "gone")
    run_id = _script(project, cli, "print(2)\n")
    _git(project, "checkout", "-q", "main")
    _git(project, "branch", "-qD", "gone")
    _git(project, "reflog", "expire", "--expire=now", "--all")
    _git(project, "gc", "-q", "--prune=now")

    out = cli("reproduce", run_id, expect=3)

    assert "is not in the local repository and the run recorded no remote" in out.stdout
    assert f"error: cannot reproduce run:{run_id}: commit" in out.stderr


def test_a_commit_gone_locally_is_cloned_from_the_recorded_remote(project: Path, cli: Cli, tmp_path: Path) -> None:
    _repository(project, cli)
    _script(project, cli, "print(1)\n")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    _git(project, "remote", "add", "origin", str(remote))
    _git(project, "checkout", "-qb", "feature")
    run_id = _script(project, cli, "open('out.txt', 'w').write('feature')\n", "--output", "out.txt")
    _git(project, "push", "-q", "origin", "feature")
    _git(project, "checkout", "-q", "main")
    _git(project, "branch", "-qD", "feature")
    _git(project, "update-ref", "-d", "refs/remotes/origin/feature")
    _git(project, "reflog", "expire", "--expire=now", "--all")
    _git(project, "gc", "-q", "--prune=now")

    doc = _reproduce(cli, run_id, expect=0)

    assert [(a["artifact"], a["verdict"]) for a in doc["artifacts"]] == [("out.txt", "IDENTICAL")]  # type: ignore[index]


def test_a_missing_snapshot_object_is_exit_5(project: Path, cli: Cli, trained: str) -> None:
    with Vault.open(project) as vault:
        snapshot = vault.data.resolve("data:train@v1")
        (sha, *_), *_ = vault.data.flat(snapshot).files.values()
        vault.objects.delete(Digest(sha))

    doc = _reproduce(cli, trained, expect=5)

    assert doc["verdict"] == "not attempted"
    assert doc["missing"] == ["input data:train@v1: object of train.csv is missing from the vault"]


def test_a_model_version_reproduces_its_source_run(project: Path, cli: Cli, trained: str) -> None:
    cli("models", "register", "demo/clf", "--from", f"run:{trained}", "--artifact", "model.json")
    stat_cache = project / ".labvault" / "cache" / "stat"
    before = sorted(p.name for p in stat_cache.iterdir())

    doc = _reproduce(cli, "demo/clf@0.1.0", expect=0)

    assert doc["original"] == f"run:{trained}"
    # The workspace's data checkouts leave no stat-cache file behind: reproducing adds nothing there.
    assert sorted(p.name for p in stat_cache.iterdir()) == before


def test_the_short_form_names_the_default_projects_single_model(project: Path, cli: Cli, trained: str) -> None:
    cli("models", "register", "demo/other", "--from", f"run:{trained}", "--artifact", "model.json")
    err = cli("reproduce", "@0.1.0", expect=3).stderr  # the default project ("project") has no model yet
    assert "no model in project project" in err
    assert "demo/other" in err
    cli("models", "register", "project/clf", "--from", f"run:{trained}", "--artifact", "model.json")

    doc = _reproduce(cli, "@0.1.0", expect=0)

    assert doc["original"] == f"run:{trained}"
    assert doc["target"] == "project/clf@0.1.0"
    cli("models", "register", "project/big", "--from", f"run:{trained}", "--artifact", "model.json")
    err = cli("reproduce", "@0.1.0", expect=2).stderr
    assert "@0.1.0 is ambiguous" in err
    assert "project/big@0.1.0, project/clf@0.1.0" in err
    assert err.count("\n") == 2  # error + hint, no traceback
    assert "not a version or alias" in cli("reproduce", "@", expect=2).stderr


def test_a_run_made_by_start_run_in_a_plain_script(project: Path, cli: Cli) -> None:
    _repository(project, cli)
    code = (
        "import random, labvault as lv\n"
        "with lv.start_run(seed=5) as run:\n"
        "    random.seed(5)\n"
        "    run.log_metric('score', random.random())\n"
        "    run.log_dict({'w': random.random()}, 'model.json')\n"
    )
    (project / "job.py").write_text(code)
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "job")
    subprocess.run([sys.executable, "job.py"], cwd=project, check=True)
    with Vault.open(project) as vault:
        (run,) = vault.runs.list()

    doc = _reproduce(cli, run.id, expect=0)

    assert {m["metric"]: m["verdict"] for m in doc["metrics"]} == {"score": "EXACT"}  # type: ignore[index]
    assert [(a["artifact"], a["verdict"]) for a in doc["artifacts"]] == [("model.json", "IDENTICAL")]  # type: ignore[index]


def test_bad_input(project: Path, cli: Cli, trained: str) -> None:
    assert "no run" in cli("reproduce", "run:abcdef123456", expect=3).stderr
    assert "--rtol" in cli("reproduce", trained, "--rtol", "-1", expect=2).stderr
    with Vault.open(project) as vault:
        running = vault.runs.create(command=[sys.executable, "x.py"])
        no_command = vault.runs.create(command=[])
        vault.runs.finish(no_command.id)
    assert "still running" in cli("reproduce", running.id, expect=4).stderr
    err = cli("reproduce", no_command.id, expect=2).stderr
    assert "recorded no command" in err
    assert err.count("\n") == 2  # error + hint, no traceback


def test_rebuild_reproduces_in_a_uv_environment_cached_by_its_hash(project: Path, cli: Cli, trained: str) -> None:
    first = _reproduce(cli, trained, "--env", "rebuild", expect=0)
    second = _reproduce(cli, trained, "--env", "rebuild", expect=0)

    assert first["environment"]["mode"] == "rebuild"  # type: ignore[index]
    assert "uv environment built in" in first["environment"]["reason"]  # type: ignore[index]
    assert "uv environment cached" in second["environment"]["reason"]  # type: ignore[index]
    assert [(a["artifact"], a["verdict"]) for a in second["artifacts"]] == [("model.json", "IDENTICAL")]  # type: ignore[index]
    (env,) = [e for e in (project / ".labvault" / "envs").iterdir() if e.is_dir()]
    with Vault.open(project) as vault:
        rerun = vault.runs.get(second["reruns"][0])  # type: ignore[index]
    assert rerun.capture["command"][0] == str(env / "bin" / "python")  # the rebuilt interpreter ran it


def _edited_environment(project: Path, cli: Cli, edit: dict[str, object]) -> str:
    """A finished run whose recorded environment is the real one with ``edit`` applied."""
    _repository(project, cli)
    (project / "job.py").write_text("print(1)\n")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "job")
    with Vault.open(project) as vault:
        run = vault.runs.create(command=[sys.executable, "job.py"])
        doc = json.loads(vault.objects.get_bytes(Digest(run.capture["environment"].removeprefix("sha256:"))))
        doc.update(edit)
        with vault.objects.batch():
            digest = vault.objects.put_bytes(json.dumps(doc).encode())
        vault.runs.update_capture(run.id, {"environment": str(digest)})
        vault.runs.finish(run.id, exit_code=0)
    return run.id


def test_a_recorded_python_this_machine_lacks_is_exit_7(project: Path, cli: Cli) -> None:
    run_id = _edited_environment(project, cli, {"python": {"version": "3.7.1", "implementation": "CPython"}})

    doc = _reproduce(cli, run_id, expect=7)  # --env auto: the Python differs, so it rebuilds

    assert doc["environment"]["mode"] == "rebuild"  # type: ignore[index]
    assert doc["missing"] == ["Python 3.7 (recorded 3.7.1) is not on this machine"]


def test_packages_that_cannot_be_installed_are_all_named_exit_7(project: Path, cli: Cli) -> None:
    packages = [
        {"name": "attrs", "version": "99.1.0"},
        {"name": "typer", "version": "99.0.0"},
        {"name": "pyyaml", "version": "6.0.2"},
    ]
    run_id = _edited_environment(project, cli, {"packages": packages})

    doc = _reproduce(cli, run_id, "--env", "rebuild", expect=7)

    assert doc["missing"] == [
        "package attrs==99.1.0 cannot be installed",
        "package typer==99.0.0 cannot be installed",
    ]


def test_environment_drift_is_named_with_env_current(project: Path, cli: Cli) -> None:
    # The run was recorded where PyYAML 5.4.1 was installed and wrote its version; this machine has another.
    code = (
        "from importlib.metadata import version\n"
        "import labvault as lv\n"
        "with lv.start_run() as run:\n"
        "    run.log_text('pyyaml ' + version('pyyaml'), 'out.txt')\n"
    )
    _repository(project, cli)
    (project / "job.py").write_text(code)
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "job")
    with Vault.open(project) as vault:
        run = vault.runs.create(command=[sys.executable, "job.py"])
        doc = json.loads(vault.objects.get_bytes(Digest(run.capture["environment"].removeprefix("sha256:"))))
        for package in doc["packages"]:
            if package["name"].lower() == "pyyaml":
                installed, package["version"] = package["version"], "5.4.1"
        with vault.objects.batch():
            digest = vault.objects.put_bytes(json.dumps(doc).encode())
        vault.runs.update_capture(run.id, {"environment": str(digest)})
        vault.runs.log_bytes(run.id, b"pyyaml 5.4.1", name="out.txt")
        vault.runs.finish(run.id, exit_code=0)

    doc = _reproduce(cli, run.id, "--env", "current", expect=1)

    assert [(a["artifact"], a["verdict"]) for a in doc["artifacts"]] == [("out.txt", "DIFFERENT")]  # type: ignore[index]
    assert doc["causes"] == [f"environment drift: pyyaml 5.4.1 -> {installed}"]
    assert doc["environment"]["packages"] == [f"pyyaml 5.4.1 -> {installed}"]  # type: ignore[index]


def test_report_file_workdir_and_keep(project: Path, cli: Cli, trained: str, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    out = cli("reproduce", trained, "--workdir", str(workdir), "--keep", "--report", str(tmp_path / "r.json"))

    assert "**Verdict: REPRODUCED**" in out.stdout
    assert f"workspace kept in {workdir}" in out.stderr
    assert (workdir / "rerun-1" / "model.json").is_file()
    assert (workdir / "rerun-1" / "configs" / "run.yaml").read_text() == "lr: 0.1\nepochs: 20\n"
    assert json.loads((tmp_path / "r.json").read_text())["verdict"] == "reproduced"
    assert "already holds rerun-1" in cli("reproduce", trained, "--workdir", str(workdir), expect=2).stderr
    err = cli("reproduce", trained, "--workdir", str(project / "inside"), expect=2).stderr
    assert "overlaps the project" in err
    assert not (project / "inside").exists()


def test_a_module_run_with_python_m_reruns_the_workspace_copy(project: Path, cli: Cli) -> None:
    # `python -m pkg.job` records the module's absolute path in argv: it must name the clean copy.
    _repository(project, cli)
    (project / "pkg").mkdir()
    (project / "pkg" / "__init__.py").write_text("")
    code = "import labvault as lv\nwith lv.start_run() as run:\n    run.log_text('{}', 'out.txt')\n"
    (project / "pkg" / "job.py").write_text(code.format("v1"))
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "job")
    subprocess.run([sys.executable, "-m", "pkg.job"], cwd=project, check=True)
    with Vault.open(project) as vault:
        (run,) = vault.runs.list()
    assert run.capture["command"][1] == str(project / "pkg" / "job.py")
    (project / "pkg" / "job.py").write_text(code.format("v2"))  # the checkout moved on

    doc = _reproduce(cli, run.id, expect=0)

    assert [(a["artifact"], a["verdict"]) for a in doc["artifacts"]] == [("out.txt", "IDENTICAL")]  # type: ignore[index]


def test_a_nested_run_is_reproduced_through_its_process(project: Path, cli: Cli) -> None:
    code = (
        "import random, labvault as lv\n"
        "with lv.start_run() as run:\n"
        "    for fold in range(2):\n"
        "        with lv.start_run(name='fold', nested=True) as child:\n"
        "            child.log_metric('score', random.Random(fold).random())\n"
        "            child.log_text(str(fold), 'fold.txt')\n"
    )
    _repository(project, cli)
    top = _script(project, cli, code)
    with Vault.open(project) as vault:
        folds = sorted((r for r in vault.runs.list() if r.parent_id == top), key=lambda r: r.started_at)
    second = folds[1]

    doc = _reproduce(cli, second.id, expect=0)

    assert doc["original"] == f"run:{second.id}"
    assert {m["metric"]: (m["verdict"], m["recorded"]) for m in doc["metrics"]} == {  # type: ignore[index]
        "score": ("EXACT", second.metrics["score"])
    }
    with Vault.open(project) as vault:
        (compared,) = doc["compared"]  # type: ignore[misc]
        twin = vault.runs.get(compared)
        assert twin.parent_id == doc["reruns"][0].removeprefix("run:")  # type: ignore[index]
        assert twin.metrics == second.metrics


def test_everything_missing_is_listed_not_just_the_first(project: Path, cli: Cli, trained: str) -> None:
    with Vault.open(project) as vault:
        snapshot = vault.data.resolve("data:train@v1")
        (sha, *_), *_ = vault.data.flat(snapshot).files.values()
        vault.objects.delete(Digest(sha))
    _git(project, "checkout", "-q", "--orphan", "other")
    _git(project, "commit", "-qm", "other")
    _git(project, "branch", "-qD", "main")
    _git(project, "reflog", "expire", "--expire=now", "--all")
    _git(project, "gc", "-q", "--prune=now")

    doc = _reproduce(cli, trained, expect=3)  # something gone (3) outranks something corrupt (5)

    assert len(doc["missing"]) == 2  # type: ignore[arg-type]
    assert "is not in the local repository" in doc["missing"][0]  # type: ignore[index]
    assert doc["missing"][1] == "input data:train@v1: object of train.csv is missing from the vault"  # type: ignore[index]


def test_a_run_started_in_a_subfolder_reruns_there(project: Path, cli: Cli) -> None:
    _repository(project, cli)
    (project / "sub").mkdir()
    (project / "sub" / "job.py").write_text("import os\nopen('out.txt', 'w').write(os.path.basename(os.getcwd()))\n")
    (project / "sub" / "settings.yaml").write_text("x: 1\n")
    _git(project, "add", "sub/job.py")
    _git(project, "commit", "-qm", "job")
    out = cli(
        "run", "--config", "settings.yaml", "--output", "out.txt", "--", sys.executable, "job.py", cwd=project / "sub"
    )
    (project / "sub" / "settings.yaml").write_text("x: 2\n")

    doc = _reproduce(cli, _run_id(out), "--keep", expect=0)

    assert [(a["artifact"], a["verdict"]) for a in doc["artifacts"]] == [("out.txt", "IDENTICAL")]  # type: ignore[index]
    assert Path(doc["workdir"], "rerun-1", "sub", "settings.yaml").read_text() == "x: 1\n"  # type: ignore[arg-type]
    assert {"kind": "config", "path": "sub/settings.yaml"}.items() <= doc["restored"][0].items()  # type: ignore[index]
    shutil.rmtree(str(doc["workdir"]))
