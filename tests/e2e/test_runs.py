"""`labvault run` and `labvault runs ...` through the installed executable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import LABVAULT, Cli
from tests.e2e.teamvault import TEAM, TEAM_FULL, team_or_local_cli


@pytest.fixture
def cli(request: pytest.FixtureRequest, cli: Cli) -> Cli:
    """The local vault, or (for the tests marked TEAM) also a team vault on PostgreSQL + S3."""
    return team_or_local_cli(request, cli)


TRAIN = """
import os, sys, labvault as lv
os.chdir("/")  # the library still finds the wrapper's vault and run
with lv.start_run() as run:
    assert run.id == os.environ["LABVAULT_RUN_ID"]
    lv.log_params({"depth": int(sys.argv[1]), "optimizer": sys.argv[2]})
    for step, loss in enumerate([0.9, 0.5, float(sys.argv[3])]):
        lv.log_metric("loss", loss, step=step)
    lv.log_metric("auc", float(sys.argv[4]))
    lv.set_tag("team", "fraud")
print("seed", os.environ.get("LABVAULT_SEED"), os.environ.get("PYTHONHASHSEED"))
"""


@pytest.fixture
def vault_project(cli: Cli, project: Path) -> Path:
    cli("init")
    (project / "train.py").write_text(TRAIN)
    (project / "config.yaml").write_text("depth: 4\n")
    return project


def _train(
    cli: Cli, *args: str, depth: int = 4, opt: str = "adam", loss: float = 0.2, auc: float = 0.95, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    return cli("run", *args, "--", sys.executable, "train.py", str(depth), opt, str(loss), str(auc), expect=expect)


def _last_id(cli: Cli) -> str:
    return json.loads(cli("runs", "list", "--json", "--limit", "1").stdout)[0]["id"]


@TEAM
def test_run_wraps_a_python_script(cli: Cli, vault_project: Path) -> None:
    out_dir = vault_project / "out"
    (vault_project / "tx.csv").write_text("amount\n1\n")
    cli("-q", "data", "add", "tx", "tx.csv")
    proc = cli(
        "run",
        "--project",
        "fraud",
        "--name",
        "baseline",
        "--config",
        "config.yaml",
        "--input",
        "data:tx@v1",
        "--seed",
        "42",
        "--output",
        "model.txt",
        "--output",
        "out",
        "--",
        sys.executable,
        "-c",
        "import subprocess, sys, os; "
        "open('model.txt', 'w').write('weights'); os.makedirs('out/sub', exist_ok=True); "
        "open('out/sub/a.txt', 'w').write('a'); "
        "print('hello from the command'); print('warn', file=sys.stderr); "
        "subprocess.run([sys.executable, 'train.py', '4', 'adam', '0.2', '0.95'], check=True)",
    )
    assert "hello from the command" in proc.stdout
    assert "seed 42 42" in proc.stdout
    assert "warn" in proc.stderr
    assert out_dir.is_dir()
    runs = json.loads(cli("runs", "list", "--json").stdout)
    assert len(runs) == 1
    run = runs[0]
    assert run["ref"] == f"run:{run['id']}"
    assert run["status"] == "finished"
    assert run["exit_code"] == 0
    assert run["seed"] == 42
    assert run["project"] == "fraud"
    assert run["name"] == "baseline"
    assert run["params"] == {"depth": 4, "optimizer": "adam"}
    assert run["metrics"] == {"auc": 0.95, "loss": 0.2}
    assert run["inputs"] == ["data:tx@v1"]
    assert sorted(run["outputs"]) == ["model.txt", "out"]
    kinds = {a["name"]: a["kind"] for a in run["artifacts"]}
    assert kinds == {"model.txt": "file", "out": "tree"}
    shown = json.loads(cli("runs", "show", run["id"][:6], "--json").stdout)
    assert [p["value"] for p in shown["metric_history"]["loss"]] == [0.9, 0.5, 0.2]
    assert shown["config"][0]["content"] == "depth: 4\n"
    stdout = cli("object", "cat", shown["stdout"]).stdout
    assert "hello from the command" in stdout
    exported = yaml.safe_load(cli("runs", "export", run["id"]).stdout)
    assert exported["id"] == run["id"]
    assert exported["seed"] == 42
    assert exported["environment"]["sha256"].startswith("sha256:")
    assert {a["name"]: a["sha256"] for a in exported["artifacts"]}["model.txt"].startswith("sha256:")
    assert json.loads(cli("runs", "export", run["id"], "--format", "json").stdout) == exported
    cli("fsck")


def test_exit_codes(cli: Cli, vault_project: Path) -> None:
    cli("run", "--", "sh", "-c", "exit 3", expect=3)
    proc = cli("run", "--", "no-such-command-xyz", expect=127)
    assert "not found" in proc.stderr
    failed = json.loads(cli("runs", "list", "--json", "--limit", "1").stdout)[0]
    assert failed["status"] == "failed"
    assert failed["exit_code"] == 127
    (vault_project / "notexec.sh").write_text("echo hi\n")
    cli("run", "--", "./notexec.sh", expect=126)
    proc = cli("run", "--output", "never.txt", "--", "true", expect=1)
    assert "never.txt" in proc.stderr
    missing = json.loads(cli("runs", "list", "--json", "--limit", "1").stdout)[0]
    assert missing["status"] == "failed"
    assert "never.txt" in missing["error"]
    cli("run", "--", "sh", "-c", "kill -TERM $$", expect=128 + 15)
    assert json.loads(cli("runs", "list", "--json", "--limit", "1").stdout)[0]["status"] == "killed"
    cli("run", "--input", "not-a-ref", "--", "true", expect=2)
    cli("run", "--config", "missing.yaml", "--", "true", expect=2)
    cli("run", "--output", "../outside", "--", "true", expect=2)


def test_wrapper_forwards_sigterm(cli: Cli, vault_project: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [LABVAULT, "run", "--", sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        cwd=vault_project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "up"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    run = json.loads(cli("runs", "list", "--json").stdout)[0]
    assert run["status"] == "killed"


@TEAM_FULL
def test_list_filter_sort_compare(cli: Cli, vault_project: Path) -> None:
    _train(cli, "--name", "a", depth=4, opt="adam", loss=0.2, auc=0.95)
    _train(cli, "--name", "b", depth=8, opt="sgd", loss=0.7, auc=0.85)
    _train(cli, "--name", "c", depth=4, opt="rmsprop", loss=0.1, auc=0.91)

    def names(*args: str) -> list[str]:
        return [r["name"] for r in json.loads(cli("runs", "list", "--json", *args).stdout)]

    assert names() == ["c", "b", "a"]  # newest first
    assert names("--filter", "metrics.auc > 0.9 and params.depth = 4") == ["c", "a"]
    assert names("--filter", "params.optimizer in ('adam', 'sgd') and not metrics.loss > 0.5") == ["a"]
    assert names("--filter", "tags.team = 'fraud' or status = 'failed'", "--sort", "metrics.auc") == ["b", "c", "a"]
    assert names("--sort", "-metrics.auc", "--limit", "1") == ["a"]
    assert names("--sort", "name") == ["a", "b", "c"]
    assert names("--filter", "name = 'x'' OR 1=1 --'") == []
    bad = cli("runs", "list", "--filter", "metrics.auc > and", expect=2)
    assert "column 15" in bad.stderr
    lines = bad.stderr.splitlines()
    hint = next(i for i, line in enumerate(lines) if line.startswith("hint: "))
    assert lines[hint] == "hint: metrics.auc > and"
    assert lines[hint + 1].index("^") == len("hint: ") + 14
    table = cli("runs", "list").stdout
    assert "auc=0.95" in table
    ids = [r["id"] for r in json.loads(cli("runs", "list", "--json", "--sort", "name").stdout)]
    compared = json.loads(cli("runs", "compare", ids[0], ids[1], "--json").stdout)
    assert compared["params"]["depth"] == {"values": [4, 8], "differs": True}
    assert compared["metrics"]["auc"]["differs"] is True
    assert compared["environment"]["sha256"]["differs"] is False
    human = cli("runs", "compare", *ids).stdout
    assert "params.depth" in human
    assert "*" in human
    cli("runs", "compare", ids[0], expect=2)


def test_list_filters_on_inputs(cli: Cli, vault_project: Path) -> None:
    for _ in range(2):
        (vault_project / "tx.csv").write_text(f"amount\n{_}\n")
        cli("-q", "data", "add", "transactions", "tx.csv")
    _train(cli, "--name", "v1", "--input", "data:transactions@v1")
    _train(cli, "--name", "v2", "--input", "data:transactions")  # pinned to v2
    _train(cli, "--name", "none")

    def names(expr: str) -> list[str]:
        return [r["name"] for r in json.loads(cli("runs", "list", "--json", "--filter", expr).stdout)]

    assert names("inputs = 'data:transactions@v1'") == ["v1"]
    assert names("inputs like 'data:transactions@%'") == ["v2", "v1"]
    assert names("inputs != 'data:transactions@v1'") == ["none", "v2"]
    assert names("inputs not like 'data:transactions@%'") == ["none"]
    bad = cli("runs", "list", "--filter", "inputs > 'a'", expect=2)
    assert bad.stderr.startswith("error: inputs compare as text")


@TEAM_FULL
def test_compare_shows_artifacts_with_their_sha256(cli: Cli, vault_project: Path) -> None:
    import hashlib

    write = "import sys; open('model.bin', 'w').write(sys.argv[1])"
    for name, weights in (("a", "w1"), ("b", "w1"), ("c", "w2")):
        cli("run", "--name", name, "--output", "model.bin", "--", sys.executable, "-c", write, weights)
    ids = {r["name"]: r["id"] for r in json.loads(cli("runs", "list", "--json").stdout)}
    same = json.loads(cli("runs", "compare", ids["a"], ids["b"], "--json").stdout)
    w1 = "sha256:" + hashlib.sha256(b"w1").hexdigest()
    assert same["artifacts"]["model.bin"] == {"values": [w1, w1], "differs": False}
    human = cli("runs", "compare", ids["a"], ids["b"]).stdout
    row = next(line for line in human.splitlines() if "artifacts.model.bin" in line)
    assert row.count(w1) == 2
    assert not row.lstrip().startswith("*")
    differ = json.loads(cli("runs", "compare", ids["a"], ids["c"], "--json").stdout)
    assert differ["artifacts"]["model.bin"]["differs"] is True
    row = next(line for line in cli("runs", "compare", ids["a"], ids["c"]).stdout.splitlines() if "model.bin" in line)
    assert row.lstrip().startswith("*")


def test_artifacts_download_files_and_folders_verified(cli: Cli, vault_project: Path) -> None:
    import hashlib

    make = (
        "import os; os.makedirs('plots/roc', exist_ok=True); open('model.bin', 'w').write('weights'); "
        "open('plots/roc/a.png', 'w').write('png'); open('plots/b.txt', 'w').write('b'); "
        "os.symlink('b.txt', 'plots/latest')"
    )
    cli("run", "--output", "model.bin", "--output", "plots", "--", sys.executable, "-c", make)
    run_id = _last_id(cli)
    proc = cli("runs", "artifacts", run_id, "-o", "out", "--json")
    got = {f["path"]: f for f in json.loads(proc.stdout)}
    assert set(got) == {"model.bin", "plots/b.txt", "plots/roc/a.png", "plots/latest"}
    assert got["model.bin"]["sha256"] == "sha256:" + hashlib.sha256(b"weights").hexdigest()
    out = vault_project / "out"
    assert (out / "model.bin").read_text() == "weights"
    assert (out / "plots" / "roc" / "a.png").read_text() == "png"
    assert os.readlink(out / "plots" / "latest") == "b.txt"
    # Again: everything is already there, nothing is written.
    again = json.loads(cli("runs", "artifacts", run_id, "-o", "out", "--json").stdout)
    assert not any(f["written"] for f in again)
    # One artifact by name.
    cli("runs", "artifacts", run_id, "plots", "-o", "only")
    assert sorted(p.name for p in (vault_project / "only").iterdir()) == ["plots"]
    cli("runs", "artifacts", run_id, "nope", "-o", "only", expect=3)
    # A different file in the way: exit 4, and nothing else is written.
    (vault_project / "clash" / "plots").mkdir(parents=True)
    (vault_project / "clash" / "plots" / "b.txt").write_text("mine")
    clash = cli("runs", "artifacts", run_id, "-o", "clash", expect=4)
    assert clash.stderr.startswith("error: "), clash.stderr
    assert (vault_project / "clash" / "plots" / "b.txt").read_text() == "mine"
    assert not (vault_project / "clash" / "model.bin").exists()
    # A corrupt object is refused (exit 5), never written.
    from labvault.refs import Digest
    from labvault.storage.objects.local import LocalObjectStore
    from tests.corruption import flip_byte

    flip_byte(LocalObjectStore(vault_project / ".labvault"), Digest(got["model.bin"]["sha256"][7:]))
    cli("runs", "artifacts", run_id, "model.bin", "-o", "bad", expect=5)
    assert not (vault_project / "bad" / "model.bin").exists()


@TEAM_FULL
def test_show_export_delete_restore(cli: Cli, vault_project: Path) -> None:
    _train(cli, "--name", "x")
    run_id = _last_id(cli)
    shown = cli("runs", "show", run_id).stdout
    assert "loss" in shown
    assert run_id in shown
    exported = yaml.safe_load(cli("runs", "export", f"run:{run_id}").stdout)
    assert exported["params"] == {"depth": 4, "optimizer": "adam"}
    assert exported["code"]["commit"] is None  # not a git repository: recorded as a warning
    assert any("git" in w for w in exported["capture_warnings"])
    out = vault_project / "run.yaml"
    cli("runs", "export", run_id, "--output", str(out))
    assert yaml.safe_load(out.read_text())["id"] == run_id
    cli("runs", "export", run_id, "--format", "toml", expect=2)
    cli("runs", "delete", run_id)
    assert json.loads(cli("runs", "list", "--json").stdout) == []
    assert [r["id"] for r in json.loads(cli("runs", "list", "--deleted", "--json").stdout)] == [run_id]
    cli("runs", "restore", run_id[:8])
    assert [r["id"] for r in json.loads(cli("runs", "list", "--json").stdout)] == [run_id]
    cli("fsck")


def test_unknown_and_bad_run_references(cli: Cli, vault_project: Path) -> None:
    proc = cli("runs", "show", "abcdef", expect=3)
    assert "no run" in proc.stderr
    assert "hint:" in proc.stderr
    cli("runs", "show", "run:zz", expect=2)
    cli("runs", "show", "abc", expect=2)
    cli("runs", "export", "abcdef123456", expect=3)
    cli("runs", "delete", "abcdef", expect=3)


def test_help_texts(cli: Cli, project: Path) -> None:
    for args in (
        ("run",),
        ("runs",),
        ("runs", "list"),
        ("runs", "show"),
        ("runs", "compare"),
        ("runs", "export"),
        ("runs", "delete"),
        ("runs", "restore"),
    ):
        proc = cli(*args, "--help")
        assert "Usage" in proc.stdout
    start = time.perf_counter()
    cli("--help")
    assert time.perf_counter() - start < 10


def test_absolute_output_path(cli: Cli, vault_project: Path) -> None:
    target = vault_project / "results" / "final.txt"
    cli("run", "--output", str(target), "--", "sh", "-c", f"mkdir -p results && echo done > {target}")
    run = json.loads(cli("runs", "list", "--json").stdout)[0]
    assert run["outputs"] == ["results/final.txt"]


def test_show_says_when_a_running_runs_process_is_gone(cli: Cli, vault_project: Path) -> None:
    script = (
        "import os, signal, labvault as lv\n"
        "run = lv.start_run(name='doomed')\n"
        "run.log_metric('m', 1.0)\n"
        "print(run.id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=vault_project, capture_output=True, text=True, check=False
    )
    assert proc.returncode == -signal.SIGKILL
    run_id = proc.stdout.strip()
    shown = cli("runs", "show", run_id).stdout
    assert "is gone" in shown
    assert json.loads(cli("runs", "show", run_id, "--json").stdout)["status"] == "running"
    cli("fsck")


def _git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return done.stdout


def _vault_bytes(project: Path) -> int:
    return sum(p.stat().st_size for p in (project / ".labvault").rglob("*") if p.is_file() and "cache" not in p.parts)


def _csv(path: Path, size: int) -> None:
    """A CSV that does not compress to nothing (as a git binary patch would compress it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{i},{os.urandom(24).hex()}\n" for i in range(size // 60)]
    path.write_text("id,value\n" + "".join(rows))


@pytest.mark.parametrize("gitignore", [True, False], ids=["gitignore", "no-gitignore"])
def test_runs_do_not_store_the_data_again(cli: Cli, project: Path, gitignore: bool) -> None:
    """The 81 MiB report at a small scale: a 3 MiB CSV snapshotted once, then two runs."""
    _git(project, "init", "-q", "-b", "main")
    (project / "train.py").write_text("print('training')\n")
    _git(project, "add", "train.py")
    _git(project, "commit", "-qm", "code")
    cli("init")
    _csv(project / "data" / "train.csv", 3 * 1024 * 1024)
    cli("data", "add", "raw", "data", *([] if gitignore else ["--no-gitignore"]))
    before = _vault_bytes(project)
    for _ in range(2):
        cli("run", "--", sys.executable, "train.py")
    grown = _vault_bytes(project) - before
    assert grown < 256 * 1024, f"the vault grew by {grown} bytes over two runs"
    run = json.loads(cli("runs", "show", _last_id(cli), "--json").stdout)
    assert run["code"]["left_out"]["pinned"] == ["data"]
    assert not [w for w in run["capture_warnings"] if "untracked" in w]


def test_a_large_untracked_file_is_named_not_stored(cli: Cli, project: Path) -> None:
    _git(project, "init", "-q", "-b", "main")
    (project / "train.py").write_text("print('training')\n")
    _git(project, "add", "train.py")
    _git(project, "commit", "-qm", "code")
    cli("init")
    _csv(project / "scratch" / "features.csv", 3 * 1024 * 1024)
    (project / "helper.py").write_text("H = 1\n")
    before = _vault_bytes(project)
    cli("run", "--", sys.executable, "train.py")
    assert _vault_bytes(project) - before < 256 * 1024
    run = json.loads(cli("runs", "show", _last_id(cli), "--json").stdout)
    (left,) = run["code"]["left_out"]["untracked"]
    assert left["path"] == "scratch/features.csv"
    assert left["size"] == (project / "scratch" / "features.csv").stat().st_size
    assert left["sha256"].startswith("sha256:")
    assert any("scratch/features.csv" in w for w in run["capture_warnings"])
    shown = cli("runs", "show", run["id"]).stderr + cli("runs", "show", run["id"]).stdout
    assert "scratch/features.csv" in shown


def test_a_bad_capture_limit_is_a_usage_error(cli: Cli, vault_project: Path) -> None:
    (vault_project / "labvault.yaml").write_text("capture:\n  max_untracked_size: -5\n")
    proc = cli("run", "--", sys.executable, "-c", "pass", expect=2)
    assert proc.stderr.startswith("error: labvault.yaml:2: capture.max_untracked_size: '-5' is not a size")
    assert "\nhint: " in proc.stderr
    assert json.loads(cli("runs", "list", "--json").stdout) == []
