"""Starting, timing and SIGKILLing the child of ``child.py``, and the checks every kill is followed by.

A trial: start the child at call ``start``, wait until it is ready, sleep a random delay, SIGKILL
its whole process group (the child and a ``labvault`` it is running), wait until every process of
the group is gone, then read what it acknowledged. The delays are drawn from a window measured on
this machine (the duration of an unkilled call), so kills land inside calls however loaded it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvault.vault import Vault

CHILD = str(Path(__file__).with_name("child.py"))
ENDLESS = 100_000  # calls asked of a child that is going to be killed


@dataclass
class Outcome:
    """What a child acknowledged before it exited or was killed."""

    ready: object = None
    acks: list[dict[str, Any]] = field(default_factory=list)
    begun: list[tuple[int, float]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    killed: bool = False  # still running when the signal was sent
    write_seen: bool = False  # timed from the first write, and a write was seen
    mid_call: bool = False  # killed between a call's begin and its acknowledgement
    returncode: int | None = None
    stderr: str = ""

    @property
    def durations(self) -> list[float]:
        done = {a["ack"]: a["at"] for a in self.acks}
        return [done[i] - at for i, at in self.begun if i in done]


def run_child(
    op: str,
    project: Path,
    *,
    seed: int,
    start: int,
    count: int,
    state: str = "",
    kill_after: float | None = None,
    anchor: str = "ready",
    timeout: float = 180.0,
) -> Outcome:
    """Run ``child.py OP`` for calls ``start..start+count-1``; SIGKILL it ``kill_after`` s after ``anchor``.

    ``anchor`` is ``ready`` (the child is set up), ``ack`` (its first call returned: imports and
    caches are warm) or ``write`` (the vault's files first changed: the kill lands while it writes,
    a moment that is short beside a process's start-up and that random delays alone rarely hit).
    """
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    args = [sys.executable, CHILD, op, str(project), str(seed), str(start), str(count), str(write_end), state]
    outcome = Outcome()
    ready = threading.Event()
    first_ack = threading.Event()

    def read() -> None:
        with os.fdopen(read_end, "r") as lines:
            for line in lines:
                doc = json.loads(line)
                if "ready" in doc:
                    outcome.ready = doc["ready"]
                    ready.set()
                elif "begin" in doc:
                    outcome.begun.append((doc["begin"], doc["at"]))
                elif "ack" in doc:
                    outcome.acks.append(doc)
                    first_ack.set()
                else:
                    outcome.failures.append(doc)
        ready.set()
        first_ack.set()

    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                args,
                cwd=project,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                pass_fds=(write_end,),
                start_new_session=True,  # its own process group: the kill takes a running labvault too
            )
        finally:
            os.close(write_end)
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            if kill_after is not None:
                (first_ack if anchor == "ack" else ready).wait(timeout)
                if anchor == "write":
                    outcome.write_seen = _wait_for_a_write(project / ".labvault", proc, 10.0)
                time.sleep(kill_after)
                if proc.poll() is None:
                    outcome.killed = True
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            _wait_group_gone(proc.pid)
        reader.join(timeout)
        errors.seek(0)
        outcome.stderr = errors.read().decode(errors="replace")
    outcome.returncode = proc.returncode
    acked = {a["ack"] for a in outcome.acks}
    outcome.mid_call = outcome.killed and any(i not in acked for i, _ in outcome.begun)
    return outcome


def _storage_state(vault_dir: Path) -> tuple[object, ...]:
    """What a write changes first: temp files, pack sizes, the metadata's write-ahead log.

    Sizes only, a missing file as empty: opening a database creates or touches its WAL file
    without writing to it.
    """
    packs = vault_dir / "objects" / "packs"
    state: list[object] = [tuple(sorted(os.listdir(vault_dir / "tmp")))]
    for path in sorted([*packs.glob("*.pack"), vault_dir / "meta.db-wal"]):
        try:
            state.append((path.name, path.stat().st_size))
        except FileNotFoundError:
            state.append((path.name, 0))
    return tuple(state)


def _wait_for_a_write(vault_dir: Path, proc: subprocess.Popen[bytes], at_most: float) -> bool:
    """Wait until the vault's files change (or the child ends, or ``at_most`` s pass); whether they did."""
    before = _storage_state(vault_dir)
    deadline = time.monotonic() + at_most
    while proc.poll() is None and time.monotonic() < deadline:
        if _storage_state(vault_dir) != before:
            return True
        time.sleep(0.0005)
    return False


def _wait_group_gone(pgid: int, timeout: float = 30.0) -> None:
    """Wait until no live process is left in the group (a killed grandchild may take a moment to die)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _members(pgid):
            return
        time.sleep(0.01)
    raise AssertionError(f"processes of group {pgid} outlived SIGKILL: {_members(pgid)}")


def _members(pgid: int) -> list[int]:
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # a zombie holds no files or locks
            alive.append(int(entry))
    return alive


def unindexed_pack_bytes(vault_dir: Path) -> int:
    """Bytes in packs past what the index covers, read without opening the store (which would repair)."""
    packs = vault_dir / "objects" / "packs"
    if not (packs / "index.sqlite").exists():
        return 0
    with contextlib.closing(sqlite3.connect(packs / "index.sqlite")) as conn:
        rows = conn.execute("SELECT name, indexed_end FROM packs").fetchall()
    total = 0
    for name, end in rows:
        with contextlib.suppress(FileNotFoundError):
            total += max(0, (packs / name).stat().st_size - end)
    return total


def assert_fsck_clean(project: Path) -> int:
    """fsck through a fresh open of the vault (as the next command would); returns the objects it checked."""
    with Vault.open(project) as vault:
        report = vault.maintenance.fsck()
    assert report.clean, report
    return report.checked


@dataclass
class KillTrials:
    """The loop every operation runs: kill, fsck, check the acknowledged, retry, check the retry."""

    op: str
    project: Path
    counts: Counter[str]
    check: Callable[[list[dict[str, Any]]], int]  # asserts the acknowledged items are stored; returns how many
    seed: int = 0
    state: str = ""
    warm: bool = True  # whether some kills count their delay from the first acknowledged call
    next_call: int = 0
    acked: list[dict[str, Any]] = field(default_factory=list)

    def calibrate(self, calls: int) -> Outcome:
        """Run ``calls`` calls unkilled: the starting state, and the timings of a kill window."""
        outcome = self.run(count=calls)
        assert outcome.returncode == 0, outcome
        assert len(outcome.acks) == calls, outcome
        self.acked += outcome.acks
        self.next_call += calls
        return outcome

    def run(self, *, count: int, kill_after: float | None = None, anchor: str = "ready") -> Outcome:
        outcome = run_child(
            self.op,
            self.project,
            seed=self.seed,
            start=self.next_call,
            count=count,
            state=self.state,
            kill_after=kill_after,
            anchor=anchor,
        )
        assert not outcome.failures, outcome.failures
        assert "Traceback" not in outcome.stderr, outcome.stderr
        return outcome

    def trial(
        self, rng: random.Random, window: float, *, count: int = ENDLESS, after_kill: Callable[[], None] | None = None
    ) -> Outcome:
        """One kill at a random moment of ``window`` s after the child is ready, then the checks and the retry.

        ``after_kill`` looks at what the kill left, before the retry.
        """
        vault_dir = self.project / ".labvault"
        temps = set(os.listdir(vault_dir / "tmp"))
        anchors = ["ready", "ack", "write"] if self.warm else ["ready", "write"]
        anchor = anchors[self.counts["trials"] % len(anchors)]
        delay = rng.uniform(0.0, 0.01 if anchor == "write" else window)
        self.counts[f"trials timed from {'the first ' if anchor != 'ready' else ''}{anchor}"] += 1
        outcome = self.run(count=count, kill_after=delay, anchor=anchor)
        self.counts["trials"] += 1
        self.counts["trials timed from the first write that saw none"] += anchor == "write" and not outcome.write_seen
        self.counts["kills"] += outcome.killed
        self.counts["kills mid-call"] += outcome.mid_call
        if outcome.killed:
            assert outcome.returncode == -signal.SIGKILL, outcome
            # Read before anything opens the store (which re-indexes and cuts the packs).
            left = set(os.listdir(vault_dir / "tmp")) - temps
            self.counts["kills mid-write (temp files or unindexed pack records left)"] += bool(
                left or unindexed_pack_bytes(vault_dir)
            )
        else:
            assert outcome.returncode == 0, outcome
        self.counts["objects re-hashed by fsck"] += assert_fsck_clean(self.project)
        self.acked += outcome.acks
        self.counts["acknowledged items checked (cumulative)"] += self.check(self.acked)
        self.next_call += len(outcome.acks)
        if outcome.killed and after_kill is not None:
            after_kill()
        if outcome.killed:  # the call the kill interrupted, again: it must go through
            retry = self.run(count=1)
            assert retry.returncode == 0, retry
            assert [a["ack"] for a in retry.acks] == [self.next_call]
            self.counts["retries"] += 1
            self.acked += retry.acks
            self.check(retry.acks)
            self.next_call += 1
        self.counts["acknowledged calls"] = len(self.acked)
        return outcome
