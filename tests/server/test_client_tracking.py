"""Tracking through a server (``LABVAULT_URI``): the spool, the background sender, ``run.flush()``,
``labvault sync``. Real processes: the training script, the server and the CLI are subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labvault.vault import Vault
from tests.e2e.conftest import LABVAULT
from tests.server.conftest import Served, clean_env, free_port

# The team-vault half runs with LABVAULT_TEST_FULL=1 (test_client_data and test_api cross it by default).
TEAM_BY_DEFAULT = False

FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"
OUTAGE = 30.0 if FULL else 3.0  # seconds the server is away in the middle of the loop (the spec says 30)


# -- helpers ------------------------------------------------------------------------------------------
def client_env(tmp_path: Path, url: str, token: str) -> dict[str, str]:
    env = clean_env()
    home = tmp_path / "home"
    env.update(
        LABVAULT_URI=url,
        LABVAULT_TOKEN=token,
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
    )
    return env


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "home" / ".cache" / "labvault" / "spool").glob("*/*.spool"))


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "work" / "train.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("import sys, time\nimport labvault as lv\n" + textwrap.dedent(body))
    return path


def run_sync(tmp_path: Path, env: dict[str, str], *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [LABVAULT, "sync", *args], cwd=tmp_path / "work", env=env, capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == expect, f"sync exited {proc.returncode}: {proc.stdout} {proc.stderr}"
    return proc


def history(client: httpx.Client, run_id: str, key: str = "loss") -> list[tuple[int, float]]:
    r = client.get(f"/runs/{run_id}/history", params={"key": key})
    r.raise_for_status()
    return [(p["step"], p["value"]) for p in r.json().get(key, [])]


def assert_once(points: list[tuple[int, float]], count: int) -> None:
    """Steps 0..count-1, each exactly once, each with its value (step * 0.5)."""
    steps = [s for s, _ in points]
    assert len(steps) == len(set(steps)), f"{len(steps) - len(set(steps))} points stored twice"
    assert sorted(steps) == list(range(count)), f"{count - len(set(steps))} points missing"
    assert all(v == s * 0.5 for s, v in points)


# -- a server this module can stop and start again on the same port and vault -------------------------
class Restartable:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root.parent / "server.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [LABVAULT, "server", "--port", str(self.port)],
                cwd=self.root,
                env=clean_env(),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the server did not start in 60 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Restartable, str]]:
    root = tmp_path_factory.mktemp("restartable") / "proj"
    root.mkdir()
    subprocess.run([LABVAULT, "init"], cwd=root, env=clean_env(), check=True, capture_output=True)
    with Vault.open(root) as vault:
        token = vault.access.create_token("trainer", role="writer")[1]
    server = Restartable(root)
    server.start()
    try:
        yield server, token
    finally:
        if server.proc is not None:
            server.stop()
    assert "Traceback" not in server.log.read_text()


# -- tests -----------------------------------------------------------------------------------------------
def test_server_away_mid_loop_every_point_arrives_once(restartable: tuple[Restartable, str], tmp_path: Path) -> None:
    server, token = restartable
    env = client_env(tmp_path, server.url, token)
    train = script(
        tmp_path,
        f"""
        worst = 0.0
        with lv.start_run(name="outage") as run:
            print(run.id, flush=True)
            run.log_param("lr", 0.01)
            for i in range(10_000):
                t = time.perf_counter()
                run.log_metric("loss", i * 0.5)
                worst = max(worst, time.perf_counter() - t)
                if i == 2_000:
                    print("half", flush=True)
                time.sleep({(OUTAGE + 4) / 8_000})
            print("worst", worst, flush=True)
        print("ended", flush=True)
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, str(train)],
        cwd=train.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "half"
    server.stop()
    time.sleep(OUTAGE)
    server.start()
    out, err = proc.communicate(timeout=OUTAGE + 300)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    worst = float(next(line.split()[1] for line in out.splitlines() if line.startswith("worst")))
    # A call that waited on the network would have waited out the outage; a loaded machine may pause any call.
    assert worst < OUTAGE / 2, f"a log_metric call waited {worst:.2f} s while the server was away"
    with httpx.Client(base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}) as c:
        assert_once(history(c, run_id), 10_000)
        run = c.get(f"/runs/{run_id}").json()
    assert run["status"] == "finished"
    assert run["params"] == {"lr": 0.01}
    assert spool_files(tmp_path) == [], "the spool is removed once the server has it all"


def test_flush_returns_when_the_server_has_everything(served: Served, tmp_path: Path) -> None:
    env = client_env(tmp_path, served.urls[0], served.tokens["writer"])
    train = script(
        tmp_path,
        f"""
        import httpx
        with lv.start_run(name="flush") as run:
            for i in range(3_000):
                run.log_metrics({{"loss": i * 0.5, "acc": 1.0}})
            run.set_tag("phase", "one")
            run.flush()
            r = httpx.get("{served.urls[-1]}/api/v1/runs/" + run.id + "/history",
                          headers={{"Authorization": "Bearer {served.tokens["writer"]}"}})
            got = r.json()
            print(run.id, len(got["loss"]), len(got["acc"]))
        """,
    )
    proc = subprocess.run([sys.executable, str(train)], cwd=train.parent, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run_id, losses, accs = proc.stdout.split()
    assert (losses, accs) == ("3000", "3000")
    assert_once(history(served.client("reader"), run_id), 3_000)
    run = served.client("reader").get(f"/runs/{run_id}").json()
    assert run["tags"]["phase"] == "one"
    assert run["status"] == "finished"


def test_sigkill_mid_loop_then_sync_sends_every_point(served: Served, tmp_path: Path) -> None:
    env = client_env(tmp_path, served.urls[0], served.tokens["writer"])
    train = script(
        tmp_path,
        """
        with lv.start_run(name="killed") as run:
            print(run.id, flush=True)
            run.log_param("depth", 4)
            i = 0
            while True:
                run.log_metric("loss", i * 0.5)
                i += 1
                if i % 1_000 == 0:
                    print(i, flush=True)
        """,
    )
    proc = subprocess.Popen([sys.executable, str(train)], cwd=train.parent, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    while int(proc.stdout.readline()) < 5_000:
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    (spool,) = spool_files(tmp_path)
    logged = sum(1 for line in spool.read_bytes().splitlines() if line.startswith(b'{"key":"loss"'))
    assert logged >= 5_000
    before = len(history(served.client("reader"), run_id))

    sync = run_sync(tmp_path, env, "--json")
    (report,) = json.loads(sync.stdout)
    assert report["id"] == run_id
    assert report["ref"] == f"run:{run_id}"
    assert report["status"] == "sent"
    assert report["ended"] == "killed"
    assert report["error"] is None
    assert report["metrics"] == logged - before > 0, (report, logged, before)
    assert_once(history(served.client("reader"), run_id), logged)
    run = served.client("reader").get(f"/runs/{run_id}").json()
    assert run["status"] == "killed"
    assert run["params"] == {"depth": 4}
    assert spool_files(tmp_path) == []
    assert json.loads(run_sync(tmp_path, env, "--json").stdout) == []  # nothing left: a second sync is a no-op


def _killed_mid_loop(cwd: Path, env: dict[str, str]) -> tuple[str, int]:
    """A training script SIGKILLed in its loop: its run's id and its pid."""
    train = cwd / "doomed.py"
    train.write_text(
        "import os, time\nimport labvault as lv\n"
        "with lv.start_run(name='doomed') as run:\n"
        "    print(run.id, os.getpid(), flush=True)\n"
        "    while True:\n"
        "        run.log_metric('loss', 0.5)\n"
        "        time.sleep(0.001)\n"
    )
    proc = subprocess.Popen([sys.executable, str(train)], cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id, pid = proc.stdout.readline().split()
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    return run_id, int(pid)


def _shown(cwd: Path, env: dict[str, str], run_id: str) -> tuple[str, str]:
    """The status line of `runs show` and the status `runs list --json` gives, from the real CLI."""
    show = subprocess.run([LABVAULT, "runs", "show", run_id], cwd=cwd, env=env, capture_output=True, text=True)
    assert show.returncode == 0, show.stderr
    (status,) = [" ".join(line.split()) for line in show.stdout.splitlines() if line.startswith("status")]
    listed = subprocess.run([LABVAULT, "runs", "list", "--json"], cwd=cwd, env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["id"] == run_id]
    return status, row["status"]


def test_a_sigkilled_client_shows_its_process_gone_as_a_local_run_does(served: Served, tmp_path: Path) -> None:
    """The run records the client's host and pid (not the server's), so `runs show` on the client's
    machine says its process is gone, as it says of a local run whose process was SIGKILLed."""
    env = client_env(tmp_path, served.urls[0], served.tokens["writer"])
    (tmp_path / "work").mkdir()
    run_id, pid = _killed_mid_loop(tmp_path / "work", env)
    local_id, local_pid = _killed_mid_loop(served.root, clean_env())
    status, listed = _shown(tmp_path / "work", env, run_id)
    local_status, local_listed = _shown(served.root, clean_env(), local_id)
    assert f"its process {pid} is gone: it was killed or crashed" in status
    assert status.replace(str(pid), "PID") == local_status.replace(str(local_pid), "PID")
    assert listed == local_listed
    run = served.client("reader").get(f"/runs/{run_id}/export").json()
    assert (run["host"], run["pid"]) == (socket.gethostname(), pid)


def _resumed_elsewhere_shown(cwd: Path, env: dict[str, str]) -> str:
    """`runs show`'s status line of a run ended by one process and resumed by another, still running."""
    first = subprocess.run(
        [sys.executable, "-c", "import labvault as lv\nr = lv.start_run(name='twice')\nr.end('failed')\nprint(r.id)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    run_id = first.stdout.strip()
    code = (
        f"import sys, labvault as lv\nwith lv.start_run(run_id='{run_id}') as r:\n"
        "    print(r.id, flush=True)\n    sys.stdin.readline()\n"
    )
    second = subprocess.Popen(
        [sys.executable, "-c", code], cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert second.stdin is not None
    assert second.stdout is not None
    try:
        assert second.stdout.readline().strip() == run_id
        status, _ = _shown(cwd, env, run_id)
    finally:
        second.stdin.close()
        assert second.wait(timeout=120) == 0
        second.stdout.close()
    return status


def test_a_resumed_run_is_the_resuming_process(served: Served, tmp_path: Path) -> None:
    """A run resumed by another process records that process: it is not shown as gone while it runs
    (the first process has exited), through a server as locally."""
    env = client_env(tmp_path, served.urls[0], served.tokens["writer"])
    (tmp_path / "work").mkdir()
    through = _resumed_elsewhere_shown(tmp_path / "work", env)
    local = _resumed_elsewhere_shown(served.root, clean_env())
    assert (through, local) == ("status running", "status running")


def test_resend_after_a_crash_between_send_and_ack_is_stored_once(served: Served, tmp_path: Path) -> None:
    """The sender records the range it sends before sending; a process that dies before the answer
    leaves that record, and the resend (same range, same Idempotency-Key) is deduplicated."""
    from labvault.client.sender import send_spool
    from labvault.client.settings import ServerTarget
    from labvault.client.spool import SpoolWriter
    from labvault.client.spool_reader import SpoolReader
    from labvault.client.transport import Transport

    target = ServerTarget(served.urls[0], served.tokens["writer"])
    with Transport(target) as transport:
        run_id = transport.request("POST", "/runs", json={"name": "resend"})["id"]
        writer = SpoolWriter(tmp_path / "spool", url=target.url, run_id=run_id)
        for i in range(2_500):
            writer.append_metric("loss", i * 0.5, i)
        first = SpoolReader(writer.path)
        batch = first.next_batch()
        assert batch is not None
        first.mark_sending(batch)
        transport.request(
            "POST",
            f"/runs/{run_id}/log",
            content=batch.body(),
            headers={"Content-Type": "application/json"},
            idempotency_key=first.idempotency_key(batch),
        )  # the server stored it; the process "dies" before recording the answer
        for i in range(2_500, 4_000):
            writer.append_metric("loss", i * 0.5, i)  # more points after the range being sent
        writer.close()
        again = SpoolReader(writer.path)
        assert again.claim()
        report = send_spool(again, transport, retry_until=time.monotonic() + 30)
        again.release()
    assert report.done
    assert report.error is None
    assert report.metrics == 4_000  # the resent range is counted, the server kept its first answer
    assert_once(history(served.client("reader"), run_id), 4_000)


def test_a_live_spool_is_left_to_its_process(served: Served, tmp_path: Path) -> None:
    env = client_env(tmp_path, served.urls[0], served.tokens["writer"])
    train = script(
        tmp_path,
        """
        with lv.start_run(name="live") as run:
            run.log_metric("loss", 0.0)
            print(run.id, flush=True)
            sys.stdin.readline()
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, str(train)],
        cwd=train.parent,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    run_id = proc.stdout.readline().strip()
    (report,) = json.loads(run_sync(tmp_path, env, "--json").stdout)
    assert (report["id"], report["status"]) == (run_id, "live")
    proc.stdin.write("\n")
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0
    proc.stdout.close()
    assert served.client("reader").get(f"/runs/{run_id}").json()["status"] == "finished"
    assert history(served.client("reader"), run_id) == [(0, 0.0)]


def test_bad_token_is_refused_at_start_run(served: Served, tmp_path: Path) -> None:
    env = client_env(tmp_path, served.urls[0], "not-a-token")
    train = script(
        tmp_path,
        """
        from labvault.errors import LabvaultError
        try:
            lv.start_run(name="nope")
        except LabvaultError as err:
            print(type(err).__name__, err, file=sys.stderr)
            sys.exit(err.exit_code)
        """,
    )
    proc = subprocess.run([sys.executable, str(train)], cwd=train.parent, env=env, capture_output=True, text=True)
    assert proc.returncode == 8, proc.stderr
    assert "NotAllowed" in proc.stderr
    assert "token rejected" in proc.stderr
    assert spool_files(tmp_path) == []


def test_a_reader_token_cannot_start_a_run(served: Served, tmp_path: Path) -> None:
    env = client_env(tmp_path, served.urls[0], served.tokens["reader"])
    train = script(
        tmp_path,
        """
        from labvault.errors import LabvaultError
        try:
            lv.start_run(name="nope")
        except LabvaultError as err:
            sys.exit(err.exit_code)
        """,
    )
    proc = subprocess.run([sys.executable, str(train)], cwd=train.parent, env=env, capture_output=True, text=True)
    assert proc.returncode == 8, proc.stderr


def test_sync_without_a_server_is_a_usage_error(tmp_path: Path) -> None:
    env = client_env(tmp_path, "http://127.0.0.1:1", "t")
    del env["LABVAULT_URI"], env["LABVAULT_TOKEN"]
    (tmp_path / "work").mkdir()
    proc = run_sync(tmp_path, env, expect=2)
    assert proc.stderr.startswith("error: ")
    assert "LABVAULT_URI" in proc.stderr


def test_a_run_left_open_at_exit_is_sent_and_ended_as_killed(served: Served, tmp_path: Path) -> None:
    env = client_env(tmp_path, served.urls[0], served.tokens["writer"])
    train = script(
        tmp_path,
        """
        run = lv.start_run(name="no-with")
        for i in range(500):
            run.log_metric("loss", i * 0.5)
        print(run.id)
        """,
    )
    proc = subprocess.run([sys.executable, str(train)], cwd=train.parent, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    assert_once(history(served.client("reader"), run_id), 500)
    run = served.client("reader").get(f"/runs/{run_id}").json()
    assert run["status"] == "killed"
    assert "exited without ending" in run["error"]
    assert spool_files(tmp_path) == []


def test_a_batch_a_dead_server_stored_but_never_answered_is_not_stored_again(served: Served, tmp_path: Path) -> None:
    """A server killed after storing a batch, before recording its answer, leaves the key claimed
    (409 "still running" for two minutes, then a retry would store it again). The client sees that
    the batch's last point is stored and takes the batch as acknowledged."""
    import threading

    from labvault.client.sender import send_spool
    from labvault.client.settings import ServerTarget
    from labvault.client.spool import SpoolWriter
    from labvault.client.spool_reader import SpoolReader
    from labvault.client.transport import Transport

    target = ServerTarget(served.urls[0], served.tokens["writer"])
    with Transport(target) as transport:
        run_id = transport.request("POST", "/runs", json={"name": "dead-server"})["id"]
        writer = SpoolWriter(tmp_path / "spool", url=target.url, run_id=run_id)
        for i in range(1_000):
            writer.append_metric("loss", i * 0.5, i)
        writer.close()
        reader = SpoolReader(writer.path)
        batch = reader.next_batch()
        assert batch is not None
        stored, release = threading.Event(), threading.Event()
        with Vault.open(served.root) as vault:

            def work() -> dict[str, int]:  # the dead server's request: stored, never answered
                vault.runs.log_metrics(run_id, [("loss", i * 0.5, i) for i in range(1_000)])
                stored.set()
                release.wait(120)
                return {}

            claim = threading.Thread(
                target=vault.access.once,
                args=(f"writer-user:run:{run_id}", reader.idempotency_key(batch), work),
                kwargs={"encode": lambda x: x},
            )
            claim.start()
            try:
                assert stored.wait(60)
                report = send_spool(reader, transport, retry_until=time.monotonic() + 20)
            finally:
                release.set()
                claim.join()
    assert report.error is None
    assert report.done
    assert_once(history(served.client("reader"), run_id), 1_000)


def test_resume_through_the_server_continues_the_steps(served: Served, tmp_path: Path) -> None:
    env = client_env(tmp_path, served.urls[0], served.tokens["writer"])
    train = script(
        tmp_path,
        """
        run = lv.start_run(name="resumed")
        for i in range(10):
            run.log_metric("loss", i * 0.5)
        run.end("failed", error="preempted")
        with lv.start_run(run_id=run.id) as again:
            for i in range(10):
                again.log_metric("loss", (10 + i) * 0.5)
            print(again.id, again.info.status)
        """,
    )
    proc = subprocess.run([sys.executable, str(train)], cwd=train.parent, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run_id, status = proc.stdout.split()
    assert status == "running"
    assert_once(history(served.client("reader"), run_id), 20)
    assert served.client("reader").get(f"/runs/{run_id}").json()["status"] == "finished"


def test_a_spool_left_before_its_header_was_written_is_removed(tmp_path: Path) -> None:
    from labvault.client.sender import send_orphans
    from labvault.client.settings import ServerTarget
    from labvault.client.transport import Transport

    folder = tmp_path / "spool"
    folder.mkdir()
    empty = folder / "0123456789ab-0123456789abcdef.spool"
    empty.write_bytes(b"\0" * 4096)  # the mapped room of a process killed before its first record
    with Transport(ServerTarget("http://127.0.0.1:1", None)) as transport:  # never contacted
        (report,) = send_orphans(folder, transport, retry_for=0)
    assert report.done
    assert report.metrics == 0
    assert not empty.exists()


def test_the_spool_grows_past_its_first_mapping(tmp_path: Path) -> None:
    """The hot path copies into the mapped room; past it, the mapping grows and no point is lost."""
    from labvault.client.spool import SpoolWriter
    from labvault.client.spool_reader import SpoolReader

    writer = SpoolWriter(tmp_path / "spool", url="http://127.0.0.1:1", run_id="0123456789ab")
    count = 120_000  # about 6 MB of records: more than the first 4 MiB mapping
    for i in range(count):
        writer.append_metric("loss", i * 0.5, i)
    writer.append_metric("loss", float("nan"), count)
    writer.close()
    reader = SpoolReader(writer.path)
    points = []
    while (batch := reader.next_batch()) is not None:
        points.extend(json.loads(line) for line in batch.metrics)
        reader.acked = batch.end
    assert [p["step"] for p in points] == list(range(count + 1))
    assert all(p["value"] == p["step"] * 0.5 for p in points[:count])
    assert points[count]["value"] == "NaN"
