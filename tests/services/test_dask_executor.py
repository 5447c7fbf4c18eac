"""The Dask executor against a real scheduler and two workers on loopback (the ``dask_cluster`` fixture).

Deps go into the vault's object store first, as the runner puts them; the workers read them from
there into scratch folders, run the command and store the outputs. Digests are checked against the
same bytes (or the same folder, hashed as ``data add`` hashes it) made here by hand.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labvault.errors import ExternalError, ValidationError
from labvault.refs import Digest
from labvault.services.pipelines.dask_executor import DaskExecutor, scheduler_address
from labvault.services.pipelines.executor import StageJob, StageOutcome
from labvault.services.snapshots.build import build_tree
from labvault.services.snapshots.scan import scan_path
from labvault.services.snapshots.statcache import StatCache
from labvault.storage.objects.location import location_of
from labvault.storage.objects.protocol import ObjectStore
from labvault.vault import Vault
from tests.dask_cluster import DaskCluster

PY = sys.executable


def _folder_digest(store: ObjectStore, path: Path) -> str:
    return str(build_tree(store, scan_path(path), StatCache(path.parent / ".no-cache"), referenced=set()).root)


def _sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@pytest.fixture
def executor(dask_cluster: DaskCluster, vault: Vault, tmp_path: Path) -> DaskExecutor:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    ex = DaskExecutor(dask_cluster.dask_url(), location_of(vault.objects), scratch_dir=str(scratch))
    yield ex
    ex.close()
    assert list(scratch.iterdir()) == []  # every scratch folder went


def _run(ex: DaskExecutor, job: StageJob, timeout: float = 60) -> StageOutcome:
    return ex.submit(job).result(timeout=timeout)


SCRIPT = """
import os, sys
src, model, folder = sys.argv[1:4]
words = sorted(open(os.path.join(src, "a.txt")).read().split() + open(os.path.join(src, "sub", "b.txt")).read().split())
open(model, "w").write(" ".join(words) + "\\n")
os.makedirs(os.path.join(folder, "deep"), exist_ok=True)
for i, w in enumerate(words):
    open(os.path.join(folder, "deep" if i % 2 else "", w + ".txt"), "w").write(w * 3)
os.symlink("deep", os.path.join(folder, "link"))
print("wrote", len(words), "words")
"""


def test_file_and_folder_deps_and_outs(executor: DaskExecutor, vault: Vault, project: Path, tmp_path: Path) -> None:
    data = project / "data" / "in"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("gamma alpha")
    (data / "sub" / "b.txt").write_text("beta delta")
    (project / "train.py").write_text(SCRIPT)
    with vault.objects.batch():
        deps = {
            "train.py": str(vault.objects.put_file(project / "train.py")),
            "data/in": _folder_digest(vault.objects, data),
        }
    cmd = f"{PY} train.py data/in out/model.txt out/words"
    job = StageJob("train", cmd, ".", deps, ("out/model.txt", "out/words"))
    outcome = _run(executor, job)
    assert outcome.returncode == 0, outcome.log
    assert "wrote 4 words" in outcome.log
    assert outcome.missing_outs == ()
    assert outcome.worker.startswith("tcp://127.0.0.1:")

    # The same command by hand, here: the same digests.
    (project / "out").mkdir()
    subprocess.run(["sh", "-c", cmd], cwd=project, check=True, capture_output=True)
    assert outcome.outs["out/model.txt"] == _sha((project / "out" / "model.txt").read_bytes())
    assert outcome.outs["out/words"] == _folder_digest(vault.objects, project / "out" / "words")
    # ... and they are in the store, readable.
    assert (
        vault.objects.get_bytes(Digest(outcome.outs["out/model.txt"].removeprefix("sha256:")))
        == b"alpha beta delta gamma\n"
    )


def test_wdir_env_and_two_workers(executor: DaskExecutor, vault: Vault, project: Path) -> None:
    (project / "in.txt").write_text("hello")
    with vault.objects.batch():
        dep = str(vault.objects.put_file(project / "in.txt"))
    jobs = [
        StageJob(
            f"s{i}",
            'sleep 0.5; cat ../in.txt > ../out.txt; echo "$GREETING" >> ../out.txt; pwd',
            "sub",
            {"in.txt": dep},
            ("out.txt",),
            env={"GREETING": f"hi{i}"},
        )
        for i in range(4)
    ]
    started = time.monotonic()
    outcomes = [f.result(timeout=60) for f in [executor.submit(j) for j in jobs]]
    assert time.monotonic() - started < 6
    for i, o in enumerate(outcomes):
        assert o.returncode == 0, o.log
        assert o.outs == {"out.txt": _sha(f"hellohi{i}\n".encode())}
        assert o.log.strip().endswith("/sub")
    assert len({o.worker for o in outcomes}) == 2  # four stages at once on two workers of two threads


def test_failing_command_and_command_not_found(executor: DaskExecutor) -> None:
    failed = _run(executor, StageJob("bad", "echo about to fail; exit 3", ".", {}, ("never.txt",)))
    assert failed.returncode == 3
    assert failed.outs == {}
    assert "about to fail" in failed.log
    missing = _run(executor, StageJob("nf", "no-such-command-xyz", ".", {}, ()))
    assert missing.returncode == 127


def test_missing_output_is_named(executor: DaskExecutor) -> None:
    outcome = _run(executor, StageJob("m", "echo x > made.txt", ".", {}, ("made.txt", "dir/never.txt")))
    assert outcome.returncode == 0
    assert outcome.missing_outs == ("dir/never.txt",)
    assert outcome.outs == {}
    assert "did not write dir/never.txt" in outcome.log


def test_timeout_stops_the_whole_process_group(executor: DaskExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "child-survived"
    cmd = f"(sleep 3; touch {marker}) & sleep 30"
    started = time.monotonic()
    outcome = _run(executor, StageJob("slow", cmd, ".", {}, (), timeout=1.0))
    assert time.monotonic() - started < 10
    assert outcome.returncode < 0
    assert "timed out after 1 s" in outcome.log
    time.sleep(3.5)
    assert not marker.exists()  # the background child was in the group and went with it


def test_cancel_all_stops_running_stages_and_starts_nothing_new(executor: DaskExecutor) -> None:
    running = executor.submit(StageJob("long", "sleep 60", ".", {}, ()))
    time.sleep(1.5)
    started = time.monotonic()
    executor.cancel_all()
    outcome = running.result(timeout=20)
    assert time.monotonic() - started < 10
    assert outcome.returncode != 0
    after = executor.submit(StageJob("later", "true", ".", {}, ())).result(timeout=5)
    assert after.returncode != 0
    assert "cancelled" in after.log


def test_a_dep_missing_from_the_store_or_climbing_out_is_an_outcome(executor: DaskExecutor) -> None:
    absent = _run(executor, StageJob("d", "true", ".", {"x.txt": "sha256:" + "ab" * 32}, ()))
    assert absent.returncode == 125
    assert "labvault: error:" in absent.log
    escape = _run(executor, StageJob("e", "true", ".", {"../x.txt": "sha256:" + "ab" * 32}, ()))
    assert escape.returncode == 125
    assert "refusing" in escape.log


def test_a_local_store_with_a_scheduler_elsewhere_is_refused(vault: Vault) -> None:
    with pytest.raises(ValidationError, match="on another machine") as err:
        DaskExecutor("dask://192.0.2.1:8786", location_of(vault.objects))  # TEST-NET-1: never this machine
    assert err.value.exit_code == 2
    assert "s3://" in err.value.hint


def test_bad_and_unreachable_addresses(vault: Vault) -> None:
    assert scheduler_address("dask://h:8786") == "tcp://h:8786"
    assert scheduler_address("127.0.0.1:1") == "tcp://127.0.0.1:1"
    for bad in ("dask://", "http://h:1", "h", "dask://h:x", "dask://h:1/path"):
        with pytest.raises(ValidationError):
            scheduler_address(bad)
    with pytest.raises(ExternalError, match="cannot reach"):
        DaskExecutor("dask://127.0.0.1:9", location_of(vault.objects), connect_timeout=2)


def test_store_on_s3(dask_cluster: DaskCluster, s3_server, project: Path) -> None:  # type: ignore[no-untyped-def]
    """A remote store: the workers read and write it themselves (credentials from their environment)."""
    from labvault.storage.objects.location import open_store_at

    env = s3_server.env()
    os.environ.update(env)
    url = f"s3://{s3_server.bucket()}/vault"
    try:
        store = open_store_at(url)
        with store.batch():
            dep = str(store.put_bytes(b"from s3\n"))
        with DaskExecutor(dask_cluster.dask_url(), url) as ex:
            ex.client.run(exec, f"import os; os.environ.update({env!r})")
            outcome = _run(ex, StageJob("s3", "cat in.txt in.txt > out.txt", ".", {"in.txt": dep}, ("out.txt",)))
        assert outcome.returncode == 0, outcome.log
        assert outcome.outs == {"out.txt": _sha(b"from s3\nfrom s3\n")}
        assert store.get_bytes(Digest(outcome.outs["out.txt"].removeprefix("sha256:"))) == b"from s3\nfrom s3\n"
    finally:
        for name in env:
            os.environ.pop(name, None)


def test_imported_dvc_get_started_pipeline_runs_on_the_cluster(
    executor: DaskExecutor, vault: Vault, project: Path, tmp_path: Path
) -> None:
    """DVC's get-started project, imported, each stage on a worker: the outputs equal running DVC's commands by hand."""
    import shutil

    from labvault.services.pipelines.dvcimport import import_dvc
    from tests.e2e.test_pipeline_import import STAGE_ORDER, run_by_hand, write_get_started

    write_get_started(project)
    stages = import_dvc(project / "dvc.yaml").stages
    made: dict[str, str] = {}
    for name in STAGE_ORDER:
        stage = stages[name]
        deps = {}
        with vault.objects.batch():
            for dep in [*stage["deps"], "params.yaml"]:  # the runner passes the params file along
                path = project / dep
                deps[dep] = made.get(dep) or (
                    _folder_digest(vault.objects, path) if path.is_dir() else str(vault.objects.put_file(path))
                )
        outs = (*stage.get("outs", ()), *stage.get("metrics", ()), *stage.get("artifacts", ()))
        outcome = _run(executor, StageJob(name, stage["cmd"], ".", deps, tuple(outs)))
        assert outcome.returncode == 0, outcome.log
        made.update(outcome.outs)

    by_hand = tmp_path / "by-hand"
    shutil.copytree(project, by_hand, ignore=shutil.ignore_patterns(".labvault"))
    dvc = __import__("yaml").safe_load((project / "dvc.yaml").read_text())
    run_by_hand(by_hand, [dvc["stages"][s]["cmd"] for s in STAGE_ORDER])
    expected = {
        rel: _folder_digest(vault.objects, by_hand / rel)
        if (by_hand / rel).is_dir()
        else _sha((by_hand / rel).read_bytes())
        for rel in made
    }
    assert made == expected
    assert len(made) == 6  # prepared, features, model, importance, metrics, roc


def test_workers_let_go_of_the_store_after_each_stage(executor: DaskExecutor) -> None:
    """A worker lives long: a stage that opened the local store (packs, index, locks) closes it again."""

    def open_fds() -> int:
        return sum(len(fds) for fds in executor.client.run(os.listdir, "/proc/self/fd").values())

    jobs = [StageJob(f"f{i}", f"echo {i} > o.txt", ".", {}, ("o.txt",)) for i in range(12)]
    for job in jobs[:2]:  # warm-up: the worker's own one-time opens
        _run(executor, job)
    before = open_fds()
    for job in jobs[2:]:
        assert _run(executor, job).returncode == 0
    assert open_fds() - before < 5


def test_which_hosts_are_this_machine() -> None:
    import socket

    from labvault.storage.objects.location import is_local_location, is_this_machine

    for host in ("localhost", "127.0.0.1", "127.3.2.1", "::1", "[::1]", socket.gethostname()):
        assert is_this_machine(host), host
    for host in ("192.0.2.1", "198.51.100.7", "no-such-host.invalid"):
        assert not is_this_machine(host), host
    assert is_local_location("/srv/project/.labvault")
    assert is_local_location("file:///srv/project/.labvault")
    assert not is_local_location("s3://bucket/vault")
