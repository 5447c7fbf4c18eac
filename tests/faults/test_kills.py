"""SIGKILL at random moments of each writing operation; nothing acknowledged is ever lost.

Each test runs ``KILL_TRIALS`` trials of :class:`tests.faults.harness.KillTrials`: the operation is
called over and over by a child process, which acknowledges every call that returned on a pipe,
until a SIGKILL at a random moment. After each kill ``fsck`` is clean, every item acknowledged
so far is stored and correct, and the interrupted call, retried, goes through.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from labvault.refs import Digest
from labvault.vault import Vault
from tests.e2e.conftest import Cli
from tests.faults import child
from tests.faults.conftest import KILL_TRIALS, Tally
from tests.faults.harness import KillTrials, assert_fsck_clean

pytestmark = pytest.mark.slow


@pytest.fixture
def vault_dir(project: Path) -> Path:
    vault, _ = Vault.init(project)
    vault.close()
    return vault.dir


@contextmanager
def _open(project: Path) -> Iterator[Vault]:
    vault = Vault.open(project)
    try:
        yield vault
    finally:
        vault.close()


def test_object_put(project: Path, vault_dir: Path, tally: Tally, cli: Cli) -> None:
    checked: set[int] = set()

    def check(acks: list[dict[str, Any]]) -> int:
        n = 0
        with _open(project) as vault:
            for ack in acks:
                for hexd in ack["digests"]:
                    assert vault.objects.has(Digest(hexd)), f"acknowledged sha256:{hexd} (call {ack['ack']}) is lost"
                    n += 1
                if ack["ack"] in checked:
                    continue
                checked.add(ack["ack"])  # new: its bytes are the files' bytes
                files = sorted((project / "scratch" / f"put-{ack['ack']}").iterdir())
                expected = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
                assert ack["digests"] == expected
                for hexd in expected:
                    assert hashlib.sha256(vault.objects.get_bytes(Digest(hexd))).hexdigest() == hexd
        return n

    trials = KillTrials("object-put", project, tally["object put"], check, seed=1)
    window = _window(trials, calls=3, per_call=2.0)
    rng = random.Random(11)
    for _ in range(KILL_TRIALS):
        trials.trial(rng, window)
    _final_cli_checks(cli, tally["object put"])


def test_data_add(project: Path, vault_dir: Path, tally: Tally, cli: Cli) -> None:
    child.make_dataset(2, project / "ds")

    def check(acks: list[dict[str, Any]]) -> int:
        with _open(project) as vault:
            for ack in acks:
                files = {f.path: f.sha256.hex for f in vault.data.get(ack["ref"]).files}
                assert child.tree_summary(files) == ack["summary"], f"{ack['ref']} is not what call {ack['ack']} added"
        return len(acks)

    trials = KillTrials("data-add", project, tally["data add"], check, seed=2)
    window = _window(trials, calls=2, per_call=2.0)
    rng = random.Random(12)
    for _ in range(KILL_TRIALS):
        trials.trial(rng, window)
        # The retry completed the interrupted call: every version is an acknowledged one, and the
        # lock file pins the last.
        refs = sorted({a["ref"] for a in trials.acked}, key=lambda r: int(r.rsplit("@v", 1)[1]))
        with _open(project) as vault:
            assert [s.ref for s in vault.data.log("ds")][::-1] == refs
        lock = json.loads((project / "labvault.lock").read_text())
        assert lock["datasets"]["ds"]["ref"] == trials.acked[-1]["ref"]
    _final_cli_checks(cli, tally["data add"])


def test_log_metric(project: Path, vault_dir: Path, tally: Tally, cli: Cli) -> None:
    counts = tally["log_metric"]
    run_id = ""

    def check(acks: list[dict[str, Any]]) -> int:
        acked = {a["ack"] for a in trials.acked} | {a["ack"] for a in acks}
        with _open(project) as vault:
            points = vault.runs.history(run_id, "loss").get("loss", [])
        steps = Counter(p.step for p in points)
        for p in points:
            assert p.value == child.metric_value(p.step)
        missing = acked - set(steps)
        assert not missing, f"acknowledged steps lost: {sorted(missing)}"
        extra = set(steps) - acked
        assert extra <= {max(acked) + 1}, f"steps never logged: {sorted(extra)}"  # only the one killed mid-call
        counts["duplicate points (a killed call that had committed, retried)"] = sum(n - 1 for n in steps.values())
        return len(acks)

    trials = KillTrials("log-metric", project, counts, check, seed=3)
    first = trials.calibrate(200)
    run_id = trials.state = str(first.ready)
    median = sorted(first.durations)[len(first.durations) // 2]
    counts["median call (us)"] = round(1_000_000 * median)
    window = max(0.3, 400 * median)
    rng = random.Random(13)
    for _ in range(KILL_TRIALS):
        trials.trial(rng, window)
    with _open(project) as vault:
        assert vault.runs.get(run_id).status == "running"  # a SIGKILLed run stays running
    _final_cli_checks(cli, counts)


def test_models_register(project: Path, vault_dir: Path, tally: Tally, cli: Cli) -> None:
    def check(acks: list[dict[str, Any]]) -> int:
        with _open(project) as vault:
            for ack in acks:
                version = vault.registry.resolve(ack["ref"])
                files = {f.path: f.digest.hex for f in vault.registry.files(version)}
                assert files["model.bin"] == ack["model"], f"{ack['ref']} does not hold call {ack['ack']}'s model"
                assert vault.objects.has(Digest(ack["model"]))
            registered = {v.version for v in vault.registry.versions("faults/model")}
        acked = {a["ack"] for a in trials.acked + acks}
        assert registered <= {f"1.0.{i}" for i in acked | {max(acked) + 1}}  # and the one killed mid-call
        return len(acks)

    trials = KillTrials("register", project, tally["models register"], check, seed=4)
    window = _window(trials, calls=4, per_call=3.0, at_least=0.3)
    rng = random.Random(14)
    for _ in range(KILL_TRIALS):
        trials.trial(rng, window)
    _final_cli_checks(cli, tally["models register"])


def test_models_promote(project: Path, vault_dir: Path, tally: Tally, cli: Cli) -> None:
    counts = tally["models promote"]
    with _open(project) as vault:
        for n in range(3):
            child.model_files(5, 100 + n, project / "models" / f"p{n}")
            vault.registry.register("faults/model", project / "models" / f"p{n}", version=f"2.0.{n}")

    def check(acks: list[dict[str, Any]]) -> int:
        with _open(project) as vault:
            moves = sorted(vault.registry.history("faults/model"), key=lambda m: m.audit_seq)
            aliases = vault.registry.aliases("faults/model")
            audit = vault.registry.verify_audit()
        assert audit.ok, audit
        by_seq = {m.audit_seq: m for m in moves}
        for ack in acks:
            if ack["moved"]:
                move = by_seq.get(ack["seq"])
                assert move is not None, f"acknowledged move (call {ack['ack']}) is not in the history"
                assert (move.alias, move.after) == (ack["alias"], ack["version"])
        last: dict[str, str | None] = {}
        for move in moves:  # every move starts where the alias's previous move left it
            assert move.before == last.get(move.alias), moves
            last[move.alias] = move.after
        assert aliases == {a: v for a, v in last.items() if v is not None}
        return len(acks)

    trials = KillTrials("promote", project, counts, check, seed=5)
    window = _window(trials, calls=4, per_call=3.0, at_least=0.3)
    rng = random.Random(15)
    for _ in range(KILL_TRIALS):
        trials.trial(rng, window)
    _final_cli_checks(cli, counts)
    cli("audit", "verify")


def _window(trials: KillTrials, *, calls: int, per_call: float, at_least: float = 0.0) -> float:
    """Run ``calls`` unkilled calls; kills then land up to ``per_call`` typical calls after the child is ready.

    ``at_least`` keeps kills of fast calls from all landing in the first one (imports, warm caches).
    """
    outcome = trials.calibrate(calls)
    durations = sorted(outcome.durations)
    trials.counts["median call (ms)"] = round(1000 * durations[len(durations) // 2])
    return max(at_least, per_call * durations[len(durations) // 2])


def _final_cli_checks(cli: Cli, counts: Counter[str]) -> None:
    """The real executable agrees: fsck clean (exit 0), nothing left in tmp/ that gc would not remove."""
    report = json.loads(cli("fsck", "--json").stdout)
    assert report["clean"] is True, report
    gc = json.loads(cli("gc", "--dry-run", "--grace", "0", "--json").stdout)
    counts["temp files left by kills"] = gc["temp_files_removed"]


def test_gc_with_garbage_and_a_partly_dead_pack(project: Path, vault_dir: Path, tally: Tally, cli: Cli) -> None:
    counts = tally["gc"]
    live = project / "live"
    child.make_dataset(6, live)
    garbage_rng = random.Random(16)

    def make_garbage(version: int) -> None:
        """A new live version; in the same pack, more dead bytes than live ones; loose garbage; a stale temp file."""
        child.mutate_dataset(6, version, live)
        with _open(project) as vault:
            vault.data.add("live", live)
            with vault.objects.batch():
                for _ in range(400):
                    vault.objects.put_bytes(garbage_rng.randbytes(garbage_rng.randint(500, 6000)))
                vault.objects.put_bytes(garbage_rng.randbytes(child.SMALL + 1000))
            vault.objects.put_stream(io.BytesIO(garbage_rng.randbytes(20_000)))
        stale = vault_dir / "tmp" / f"obj-{version}-stale"
        stale.write_bytes(b"left by a killed writer")

    def check(acks: list[dict[str, Any]]) -> int:
        n = 0
        with _open(project) as vault:
            for snapshot in vault.data.log("live"):
                for f in vault.data.get(snapshot.ref).files:
                    assert vault.objects.has(f.sha256), f"{snapshot.ref}: {f.path} was collected"
                    n += 1
        for ack in acks:
            counts["objects deleted"] += len(ack["report"]["deleted"])
            counts["pack bytes reclaimed"] += ack["report"]["pack_bytes_reclaimed"]
        return n

    def collectable() -> int:
        with _open(project) as vault:
            report = vault.maintenance.gc(grace=0, dry_run=True)
        return len(report.deleted) + report.temp_files_removed

    trials = KillTrials("gc", project, counts, check, seed=6, warm=False)
    make_garbage(0)
    durations = trials.calibrate(1).durations
    rng = random.Random(17)
    # A gc can finish before its kill (its duration varies with the load): trial until enough kills.
    version = 1
    while counts["kills"] < KILL_TRIALS and counts["trials"] < 3 * KILL_TRIALS:
        make_garbage(version)
        version += 1
        before = collectable()

        def classify(before: int = before) -> None:
            left = collectable()
            stage = "before deleting" if left == before else "while deleting" if left else "after deleting"
            counts[f"kills {stage}"] += 1

        durations.sort()
        outcome = trials.trial(rng, 0.9 * durations[len(durations) // 2], count=1, after_kill=classify)
        if not outcome.killed:
            durations += outcome.durations
            counts["finished before the kill"] += 1
        assert collectable() == 0  # the retry (or the gc itself) collected everything
    assert counts["kills"] >= KILL_TRIALS, counts
    assert_fsck_clean(project)
    report = json.loads(cli("fsck", "--json").stdout)
    assert report["clean"] is True, report
