"""``labvault pipeline``: through the real executable (exit codes, reasons, cache, signals)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import LABVAULT, Cli

CHAIN = """\
stages:
  prepare:
    cmd: mkdir -p data/prepared && cp raw.txt data/prepared/a.txt && echo "$(cat raw.txt)!" > data/prepared/b.txt
    deps: [raw.txt]
    params: [prepare.seed]
    outs: [data/prepared]
  train:
    cmd: >-
      cat data/prepared/a.txt data/prepared/b.txt > model.pkl && grep lr params.yaml >> model.pkl &&
      echo '{"acc": 0.5, "loss": {"train": 0.25}}' > metrics.json
    deps: [data/prepared]
    params: [train]
    outs: [model.pkl]
    metrics: [metrics.json]
  evaluate:
    matrix: {split: [val, test]}
    cmd: cat model.pkl > "eval_${item.split}.txt"
    deps: [model.pkl]
    outs: ["eval_${item.split}.txt"]
  other:
    cmd: echo other > other.txt
    outs: [other.txt]
    env: ignore
"""


def _init(project: Path, cli: Cli, stages: str = CHAIN) -> None:
    cli("init")
    (project / "raw.txt").write_text("raw\n")
    (project / "params.yaml").write_text("prepare:\n  seed: 1\ntrain:\n  lr: 0.1\n  epochs: 3\n")
    (project / "labvault.yaml").write_text(stages)


def _states(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {s["stage"]: s["state"] for s in json.loads(proc.stdout)}


def _reasons(proc: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    return {s["stage"]: s["reasons"] for s in json.loads(proc.stdout)}


def _fake_env(site: Path, version: str) -> None:
    """An installed distribution, as importlib.metadata finds it (a .dist-info folder on sys.path)."""
    for old in site.glob("fakepkg-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"fakepkg-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")


def test_changes_rerun_exactly_the_affected_stages_with_reasons(project: Path, cli: Cli, tmp_path: Path) -> None:
    site = tmp_path / "site"
    _fake_env(site, "1.0")
    env = {"PYTHONPATH": str(site)}
    _init(project, cli)
    first = cli("pipeline", "run", "--json", env=env)
    assert set(_states(first).values()) == {"ran"}
    assert (project / "eval_test.txt").read_text() == "raw\nraw!\n  lr: 0.1\n"
    noop = cli("pipeline", "run", "--json", env=env)
    assert set(_states(noop).values()) == {"up to date"}

    # one dep byte: prepare and everything downstream of it, not `other`
    (project / "raw.txt").write_text("raW\n")
    status = cli("pipeline", "status", "--json", env=env)
    assert _states(status)["other"] == "up to date"
    assert _reasons(status)["prepare"][0].startswith("dep raw.txt changed: sha256:")
    ran = _states(cli("pipeline", "run", "--json", env=env))
    assert ran == {
        "prepare": "ran",
        "train": "ran",
        "evaluate@val": "ran",
        "evaluate@test": "ran",
        "other": "up to date",
    }

    # one param: train and its dependents, with the old and new value
    (project / "params.yaml").write_text("prepare:\n  seed: 1\ntrain:\n  lr: 0.05\n  epochs: 3\n")
    status = cli("pipeline", "status", "--json", env=env)
    assert _reasons(status)["train"] == ["param train.lr 0.1 -> 0.05"]
    assert _states(status)["prepare"] == "up to date"
    ran = _states(cli("pipeline", "run", "--json", env=env))
    assert [k for k, v in ran.items() if v == "ran"] == ["train", "evaluate@val", "evaluate@test"]

    # the command of one matrix stage
    (project / "labvault.yaml").write_text(CHAIN.replace('cat model.pkl > "eval_', 'cat model.pkl model.pkl > "eval_'))
    status = cli("pipeline", "status", "--json", env=env)
    assert _reasons(status)["evaluate@val"][0].startswith("command changed: ")
    ran = _states(cli("pipeline", "run", "--json", env=env))
    assert [k for k, v in ran.items() if v == "ran"] == ["evaluate@val", "evaluate@test"]

    # an installed package's version: every stage but the one with `env: ignore`
    _fake_env(site, "1.1")
    status = cli("pipeline", "status", "--json", env=env)
    assert _reasons(status)["prepare"] == ["environment: fakepkg 1.0 -> 1.1"]
    assert _states(status)["other"] == "up to date"
    assert _states(cli("pipeline", "status", "--json", "--ignore-env", env=env))["prepare"] == "will run"
    human = cli("pipeline", "status", env=env).stdout
    assert "prepare" in human
    assert "will run: environment: fakepkg 1.0 -> 1.1" in human


def test_cache_across_branches_restores_everything(project: Path, cli: Cli) -> None:
    _init(project, cli)
    cli("pipeline", "run")
    a_lock = (project / "labvault.lock").read_text()
    model_a = (project / "model.pkl").read_bytes()
    # "branch B": other data and params
    (project / "raw.txt").write_text("b\n")
    (project / "params.yaml").write_text("prepare:\n  seed: 2\ntrain:\n  lr: 0.2\n  epochs: 3\n")
    assert set(_states(cli("pipeline", "run", "--json")).values()) == {"ran", "up to date"}
    assert (project / "model.pkl").read_bytes() != model_a
    # back to A's definition: nothing runs, everything is restored from the cache
    (project / "raw.txt").write_text("raw\n")
    (project / "params.yaml").write_text("prepare:\n  seed: 1\ntrain:\n  lr: 0.1\n  epochs: 3\n")
    dry = cli("pipeline", "run", "--dry-run", "--json")
    assert _states(dry)["train"] == "will restore from cache"
    assert _reasons(dry)["train"][0].endswith(", 2 files modified")
    states = _states(cli("pipeline", "run", "--json"))
    assert "ran" not in states.values()
    assert states["train"] == "restored"
    assert (project / "model.pkl").read_bytes() == model_a
    assert (project / "labvault.lock").read_text() == a_lock


def test_lock_checkout_gitignore_and_tracking(project: Path, cli: Cli) -> None:
    _init(project, cli)
    cli("pipeline", "run")
    lock = json.loads((project / "labvault.lock").read_text())
    assert lock["format"] == "labvault.lock/2"
    assert list(lock["stages"]) == sorted(lock["stages"])
    assert lock["stages"]["train"]["params"] == {"params.yaml:train": {"epochs": 3, "lr": 0.1}}
    ignored = (project / ".gitignore").read_text().splitlines()
    assert "/model.pkl" in ignored
    assert "/data/prepared" in ignored
    # a teammate's fresh clone: outputs absent, cache present
    want = {p: (project / p).read_bytes() for p in ("model.pkl", "data/prepared/b.txt", "eval_val.txt")}
    for p in ("model.pkl", "eval_val.txt", "eval_test.txt", "other.txt"):
        (project / p).unlink()
    (project / "data/prepared/b.txt").write_text("tampered")
    assert "will restore from cache" in cli("pipeline", "status").stdout
    out = cli("pipeline", "checkout").stdout
    assert "files restored" in out
    assert {p: (project / p).read_bytes() for p in want} == want
    assert set(_states(cli("pipeline", "status", "--json")).values()) == {"up to date"}
    # tracking: one pipeline run, one child per stage, metrics from metrics.json
    runs = json.loads(cli("runs", "list", "--json").stdout)
    parent = [r for r in runs if r["name"] == "pipeline"]
    assert len(parent) == 1
    children = [r for r in runs if r.get("parent") == parent[0]["ref"]]
    assert {c["name"] for c in children} == {"prepare", "train", "evaluate@val", "evaluate@test", "other"}
    train = next(c for c in children if c["name"] == "train")
    shown = json.loads(cli("runs", "show", train["ref"], "--json").stdout)
    assert shown["metrics"]["acc"] == 0.5
    assert shown["metrics"]["loss.train"] == 0.25
    assert shown["tags"]["pipeline.status"] == "ran"
    # dag, show, tag, log
    dag = json.loads(cli("pipeline", "dag", "--json").stdout)
    assert ["prepare", "train"] in dag["edges"]
    assert ["train", "evaluate@val"] in dag["edges"]
    assert "s0 --> s1" in cli("pipeline", "dag", "--mermaid").stdout
    assert '"train" -> "evaluate@test";' in cli("pipeline", "dag", "--dot").stdout
    show = json.loads(cli("pipeline", "show", "train", "--json").stdout)
    assert show["state"] == "up to date"
    assert show["last"]["outs"]["model.pkl"].startswith("sha256:")
    tag = json.loads(cli("pipeline", "tag", "v1", "-m", "first", "--json").stdout)
    assert tag["ref"] == "pipeline:v1"
    cli("pipeline", "tag", "v1", "-m", "first")  # the same content again: a no-op
    (project / "params.yaml").write_text("prepare:\n  seed: 1\ntrain:\n  lr: 0.3\n  epochs: 3\n")
    cli("pipeline", "run")
    refused = cli("pipeline", "tag", "v1", expect=4)
    assert "pipeline:v1 exists" in refused.stderr
    log = json.loads(cli("pipeline", "log", "--json").stdout)
    assert [e["ref"] for e in log if e["kind"] == "tag"] == ["pipeline:v1"]
    assert len([e for e in log if e["kind"] == "run"]) == 2


FOLDERS = """\
stages:
  make:
    cmd: for d in a b c; do mkdir -p out/$d; for i in 1 2 3 4 5 6; do echo "$d$i" > out/$d/f$i.txt; done; done
    outs: [out]
"""


def test_checkout_of_a_folder_output_is_whole_or_nothing(project: Path, cli: Cli) -> None:
    """A folder output is built under a temp name and renamed into place: a corrupt object met midway
    leaves no half-restored folder (and an existing one as it was), and no temp folder behind."""
    from labvault.refs import Digest
    from labvault.storage.objects.local import LocalObjectStore
    from tests.corruption import flip_byte

    _init(project, cli, FOLDERS)
    cli("pipeline", "run")
    # What a killed restore left (an hour old) goes; a restore still running keeps its folder.
    stale, live = project / ".out.labvault-0badf00d", project / ".out.labvault-1234abcd"
    for d in (stale, live):
        (d / "a").mkdir(parents=True)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    subprocess.run(["rm", "-rf", str(project / "out")], check=True)
    cli("pipeline", "checkout")
    assert not stale.exists()
    assert (live / "a").is_dir()
    subprocess.run(["rm", "-rf", str(live)], check=True)
    for _ in range(2):  # the same again: restores from a fresh clone leave nothing else behind
        subprocess.run(["rm", "-rf", str(project / "out")], check=True)
        assert "18 files restored" in cli("pipeline", "checkout").stdout
        assert (project / "out" / "c" / "f6.txt").read_text() == "c6\n"
    before = sorted(os.listdir(project))
    digest = Digest(hashlib.sha256(b"c6\n").hexdigest())
    flip_byte(LocalObjectStore(project / ".labvault"), digest)
    (project / "out" / "a" / "f1.txt").write_text("tampered\n")
    proc = cli("pipeline", "checkout", expect=5)
    assert "output out" in proc.stderr
    assert (project / "out" / "a" / "f1.txt").read_text() == "tampered\n"  # as it was, not half replaced
    assert sorted(os.listdir(project)) == before
    subprocess.run(["rm", "-rf", str(project / "out")], check=True)
    cli("pipeline", "checkout", expect=5)
    assert not (project / "out").exists()
    assert sorted(os.listdir(project)) == [n for n in before if n != "out"]


def test_noop_run_and_status_open_no_database(project: Path, cli: Cli) -> None:
    _init(project, cli)
    cli("pipeline", "run")
    db = project / ".labvault" / "meta.db"
    db.rename(db.with_name("meta.db.away"))
    try:
        assert "5 up to date" in cli("pipeline", "run").stdout
        assert "will run" not in cli("pipeline", "status").stdout
        assert not db.exists()
    finally:
        db.with_name("meta.db.away").rename(db)


def test_noop_status_imports_no_parser_or_database(project: Path, cli: Cli) -> None:
    _init(project, cli)
    cli("pipeline", "run")
    probe = (
        "import sys\nfrom labvault.cli.entry import main\ncode = main(['pipeline', 'status'])\n"
        "heavy = sorted(m for m in ('typer', 'pydantic', 'sqlalchemy', 'yaml', 'rich') if m in sys.modules)\n"
        "print('HEAVY', code, heavy)"
    )
    python = Path(LABVAULT).parent / "python"
    done = subprocess.run([str(python), "-c", probe], cwd=project, capture_output=True, text=True, check=True)
    assert "HEAVY 0 []" in done.stdout, done.stdout + done.stderr


def test_lean_and_typer_paths_answer_alike(project: Path, cli: Cli) -> None:
    _init(project, cli)
    cli("pipeline", "run", "prepare")
    for args in (("status",), ("status", "--json"), ("run", "--dry-run", "train"), ("status", "nope")):
        lean = cli("pipeline", *args, expect=None)
        full = cli("pipeline", *args, expect=None, env={"LABVAULT_CLI_FULL": "1"})
        assert (lean.returncode, lean.stdout, lean.stderr) == (full.returncode, full.stdout, full.stderr)


def test_lock_format_1_is_read(project: Path, cli: Cli) -> None:
    _init(project, cli, "stages:\n  one:\n    cmd: echo 1 > one.txt\n    outs: [one.txt]\n")
    (project / "labvault.lock").write_text(json.dumps({"datasets": {}, "format": "labvault.lock/1"}))
    assert "never run" in cli("pipeline", "status").stdout
    cli("pipeline", "run")
    assert json.loads((project / "labvault.lock").read_text())["format"] == "labvault.lock/2"


def test_data_dep_is_pinned_by_the_lock(project: Path, cli: Cli) -> None:
    _init(
        project, cli, "stages:\n  use:\n    cmd: cat ds/x.txt > used.txt\n    deps: [data:ds]\n    outs: [used.txt]\n"
    )
    refused = cli("pipeline", "run", expect=2)
    assert "data dep data:ds is not pinned" in refused.stderr
    (project / "ds").mkdir()
    (project / "ds" / "x.txt").write_text("v1\n")
    cli("data", "add", "ds", "ds")
    cli("pipeline", "run")
    (project / "ds" / "x.txt").unlink()  # the checkout at the pinned path is restored before the stage runs
    assert (project / "used.txt").read_text() == "v1\n"
    cli("pipeline", "run", "--force")
    assert (project / "ds" / "x.txt").read_text() == "v1\n"


@pytest.mark.parametrize(
    ("stages", "params", "code", "words"),
    [
        (
            "stages:\n  a:\n    cmd: x\n    deps: [b.txt]\n    outs: [a.txt]\n  b:\n    cmd: y\n    deps: [a.txt]\n"
            "    outs: [b.txt]\n",
            "",
            2,
            "the stages form a cycle: ",
        ),
        (
            "stages:\n  a:\n    cmd: x\n    deps: [nowhere.txt]\n",
            "",
            2,
            "dep nowhere.txt does not exist and no stage makes it",
        ),
        (
            "stages:\n  a:\n    matrix: {split: []}\n    cmd: x\n",
            "",
            2,
            "labvault.yaml:3: stages.a.matrix.split: the list is empty",
        ),
        (
            "stages:\n  a:\n    cmd: x\n    params: [train.lr]\n",
            "train: {}\n",
            2,
            "param 'train.lr' is missing from params.yaml",
        ),
        ("stages:\n  a:\n    cmd: x\n    dep: [x]\n", "", 2, "labvault.yaml:4: stages.a.dep: unknown key"),
        (
            "stages:\n  a:\n    cmd: x\n    outs: [o]\n  b:\n    cmd: y\n    outs: [o]\n",
            "",
            2,
            "stages a and b both write o",
        ),
        (
            "stages:\n  a:\n    cmd: x\n    outs: [o]\n  b:\n    cmd: y\n    outs: [o/p]\n",
            "",
            2,
            "output o/p of stage b is inside output o of stage a",
        ),
        ("stages:\n  a:\n    cmd: x\n    outs: [../o]\n", "", 2, "is outside the project"),
    ],
)
def test_bad_definitions(project: Path, cli: Cli, stages: str, params: str, code: int, words: str) -> None:
    _init(project, cli, stages)
    if params:
        (project / "params.yaml").write_text(params)
    for verb in ("status", "run"):
        refused = cli("pipeline", verb, expect=code)
        assert words in refused.stderr, refused.stderr
        assert refused.stderr.startswith("error: ")
        assert "\nhint: " in refused.stderr
    if "cycle" in words:
        assert "a -> b -> a" in refused.stderr or "b -> a -> b" in refused.stderr


def test_unknown_stage_is_not_found(project: Path, cli: Cli) -> None:
    _init(project, cli)
    for args in (("run", "nope"), ("status", "nope"), ("show", "nope"), ("run", "evaluate")):
        refused = cli("pipeline", *args, expect=3)
        assert "no stage named" in refused.stderr


def test_failure_semantics(project: Path, cli: Cli) -> None:
    _init(
        project,
        cli,
        """\
stages:
  bad:
    cmd: echo boom; exit 3
    outs: [bad.txt]
  after_bad:
    cmd: cp bad.txt after.txt
    deps: [bad.txt]
    outs: [after.txt]
  slow:
    cmd: sleep 1 && echo ok > slow.txt
    outs: [slow.txt]
  forgets:
    cmd: echo nothing
    outs: [forgot.txt]
""",
    )
    failed = cli("pipeline", "run", "--keep-going", "-j", "2", "--json", expect=1)
    states = _states(failed)
    assert states == {"bad": "failed", "after_bad": "skipped", "slow": "ran", "forgets": "failed"}
    assert "stage bad failed (exit code 3); log: .labvault/cache/pipelines/logs/bad.log" in failed.stderr
    assert "boom" in (project / ".labvault/cache/pipelines/logs/bad.log").read_text()
    forgot = cli("pipeline", "run", "forgets", expect=1)
    assert "stage forgets did not write its declared output forgot.txt" in forgot.stderr
    # the default: after a failure nothing new starts, the completed stages stay cached
    (project / "slow.txt").unlink()
    stopped = cli("pipeline", "run", "-j", "1", "--json", expect=1)
    assert _states(stopped)["bad"] == "failed"
    assert "not started" in _states(stopped).values()


def test_independent_stages_run_at_once(project: Path, cli: Cli) -> None:
    body = "".join(
        f"  s{i}:\n    cmd: date +%s.%N > o{i}.txt && sleep 1 && date +%s.%N >> o{i}.txt\n    outs: [o{i}.txt]\n"
        for i in range(4)
    )
    _init(project, cli, "stages:\n" + body)
    assert set(_states(cli("pipeline", "run", "-j", "4", "--json")).values()) == {"ran"}
    spans = [[float(t) for t in (project / f"o{i}.txt").read_text().split()] for i in range(4)]
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all four were running at once


def _wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _as_from_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it: a test run started in the background of a non-interactive
    shell (as a CI job may be) has SIGINT ignored, and every process it starts would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(project: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.Popen(
        [LABVAULT, "pipeline", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )


SLOW = """\
stages:
  slow:
    cmd: echo started >> ../started.log && sleep 2 && mkdir -p out && echo done > out/result.txt
    outs: [out]
  quick:
    cmd: echo quick > quick.txt
    outs: [quick.txt]
"""


def test_two_concurrent_runs_run_each_key_once(project: Path, cli: Cli) -> None:
    _init(project, cli, SLOW)
    first, second = _popen(project, "run", "--json"), _popen(project, "run", "--json")
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert (project.parent / "started.log").read_text() == "started\n"
    states = [_states(subprocess.CompletedProcess([], 0, o[0], o[1]))["slow"] for o in outs]
    assert sorted(states) in (["ran", "restored"], ["ran", "up to date"])
    assert (project / "out" / "result.txt").read_text() == "done\n"
    cli("fsck")


def test_sigkill_during_a_stage_leaves_no_cached_partial_output(project: Path, cli: Cli) -> None:
    _init(project, cli, SLOW)
    proc = _popen(project, "run", "slow")
    _wait_for(project.parent / "started.log")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    time.sleep(2.5)  # the orphaned stage command finishes on its own
    status = _states(cli("pipeline", "status", "--json"))
    assert status["slow"] == "will run"  # not "will restore": nothing was cached
    assert set(_states(cli("pipeline", "run", "--json")).values()) == {"ran"}
    assert (project.parent / "started.log").read_text() == "started\nstarted\n"
    cli("fsck")


def test_ctrl_c_stops_every_stage_and_removes_unfinished_outputs(project: Path, cli: Cli) -> None:
    _init(
        project,
        cli,
        SLOW.replace("sleep 2", "mkdir -p out && echo partial > out/part.txt && sleep 30")
        + "  slow2:\n    cmd: echo s >> ../started2.log && sleep 30 && echo x > s2.txt\n    outs: [s2.txt]\n",
    )
    proc = _popen(project, "run", "-j", "3")
    _wait_for(project.parent / "started.log")
    _wait_for(project.parent / "started2.log")
    _wait_for(project / "out" / "part.txt")
    # `quick` runs beside them: interrupt only once it has finished (its lock entry written), or it is
    # rightly not up to date.
    deadline = time.monotonic() + 30
    while _states(cli("pipeline", "status", "--json"))["quick"] != "up to date":
        assert time.monotonic() < deadline, "quick's result was never recorded"
        time.sleep(0.1)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 10
    assert "Traceback" not in err
    assert not (project / "out").exists()
    status = _states(cli("pipeline", "status", "--json"))
    assert status["slow"] == "will run"
    assert status["slow2"] == "will run"
    assert status["quick"] == "up to date"


def test_stages_on_a_dask_cluster(project: Path, cli: Cli, dask_cluster: Any) -> None:
    """The runner and the Dask executor together: deps travel through the object store, outputs come back."""
    _init(project, cli)
    ran = cli("pipeline", "run", "--executor", dask_cluster.dask_url(), "--json", timeout=300)
    assert set(_states(ran).values()) == {"ran"}
    assert (project / "eval_test.txt").read_text() == "raw\nraw!\n  lr: 0.1\n"
    assert (project / "data" / "prepared" / "b.txt").read_text() == "raw!\n"
    assert set(_states(cli("pipeline", "status", "--json")).values()) == {"up to date"}
