"""Benchmark: a team vault (PostgreSQL + S3) against DVC with an S3 remote, on one moto S3 server.

Usage: ``.venv/bin/python benchmarks/team.py [--files 20000]``

Starts a moto S3 server process on loopback (its request log counts the requests each tool sends,
on the server side), installs DVC with its s3 extra into ``.bench/dvc-venv`` if absent, creates
FILES files of 1-8 KiB under ``.bench/team/``, then times, as whole commands on the same files:

- machine 1: ``labvault data add`` into a team vault (metadata in a fresh PostgreSQL schema of
  ``LABVAULT_TEST_POSTGRES_URL``, objects in ``s3://<bucket>/vault``) beside ``dvc add`` +
  ``dvc push`` to an S3 remote on the same server; time and PUT requests;
- machine 2 (a fresh folder): ``labvault data checkout`` beside ``git clone`` + ``dvc pull``
  (the clone is not timed).

One run each (the set-up dominates a second run); the ratios are DVC's over labvault's.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from _harness import DVC, ensure_dvc, free_port
from _seed import make_files

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / ".bench"
WORK = BENCH / "team"
LABVAULT = REPO / ".venv" / "bin" / "labvault"
LV_PYTHON = REPO / ".venv" / "bin" / "python"
PG = os.environ.get("LABVAULT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) ')


class Moto:
    """``python -m moto.server`` on a free port; its werkzeug log has one line per request."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._empty = log.with_name("aws-empty.ini")
        self._empty.write_text("")
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [str(LV_PYTHON), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("moto server did not start")

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            # Empty files, not /dev/null: DVC's aiobotocore refuses a config file it cannot stat as a file.
            "AWS_SHARED_CREDENTIALS_FILE": str(self._empty),
            "AWS_CONFIG_FILE": str(self._empty),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def requests(self) -> Counter[str]:
        self._log_file.flush()
        return Counter(m.group(1) for m in _REQUEST.finditer(self.log.read_text(errors="replace")))

    def make_bucket(self, name: str) -> None:
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log_file.close()


def timed(cmds: list[list[str]], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    for cmd in cmds:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - start


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    timed([cmd], cwd, env)


def pg_schema_url() -> tuple[str, str]:
    schema = f"lv_bench_{secrets.token_hex(4)}"
    code = (
        "import sqlalchemy as sa,sys\n"
        "e=sa.create_engine('postgresql+psycopg://'+sys.argv[1].split('://',1)[1])\n"
        "with e.begin() as c: c.exec_driver_sql(sys.argv[2])\n"
    )
    subprocess.run([str(LV_PYTHON), "-c", code, PG, f'CREATE SCHEMA "{schema}"'], check=True)
    sep = "&" if "?" in PG else "?"
    return f"{PG}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str) -> None:
    code = (
        "import sqlalchemy as sa,sys\n"
        "e=sa.create_engine('postgresql+psycopg://'+sys.argv[1].split('://',1)[1])\n"
        "with e.begin() as c: c.exec_driver_sql(sys.argv[2])\n"
    )
    subprocess.run([str(LV_PYTHON), "-c", code, PG, f'DROP SCHEMA "{schema}" CASCADE'], check=False)


def delta(after: Counter[str], before: Counter[str]) -> Counter[str]:
    return Counter({k: after[k] - before[k] for k in after if after[k] - before[k]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    args = parser.parse_args()
    ensure_dvc(s3=True)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    source = WORK / "source"
    print(f"creating {args.files} files of 1-8 KiB", flush=True)
    make_files(source, args.files)
    moto = Moto(WORK / "moto.log")
    db, schema = pg_schema_url()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LABVAULT_"))}
    env = {**base, **moto.env(), "LABVAULT_USER": "bench@example.com", "DVC_NO_ANALYTICS": "1", "NO_COLOR": "1"}
    env.update(
        {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}
    )
    try:
        moto.make_bucket("lv-bench")
        moto.make_bucket("dvc-bench")
        rows = []

        # -- machine 1 ----------------------------------------------------------------------------
        lv1, dvc1 = WORK / "lv1", WORK / "dvc1"
        for p in (lv1, dvc1):
            shutil.copytree(source, p / "data")
        run([str(LABVAULT), "init", "--db", db, "--objects", "s3://lv-bench/vault"], lv1, env)
        before = moto.requests()
        lv_add = timed([[str(LABVAULT), "data", "add", "d", "data"]], lv1, env)
        lv_req = delta(moto.requests(), before)

        for cmd in (
            ["git", "init", "-q"],
            [str(DVC), "init", "-q"],
            [str(DVC), "remote", "add", "-d", "store", "s3://dvc-bench/store"],
            [str(DVC), "remote", "modify", "store", "endpointurl", moto.endpoint],
        ):
            run(cmd, dvc1, env)
        before = moto.requests()
        dvc_add = timed([[str(DVC), "add", "-q", "data"], [str(DVC), "push", "-q"]], dvc1, env)
        dvc_req = delta(moto.requests(), before)
        run(["git", "add", "-A", "."], dvc1, env)
        run(["git", "commit", "-q", "-m", "data"], dvc1, env)
        rows.append((f"add {args.files} files: data add / dvc add + push", lv_add, dvc_add))

        # -- machine 2 ----------------------------------------------------------------------------
        lv2, dvc2 = WORK / "lv2", WORK / "dvc2"
        lv2.mkdir()
        run([str(LABVAULT), "init", "--db", db, "--objects", "s3://lv-bench/vault"], lv2, env)
        before = moto.requests()
        lv_co = timed([[str(LABVAULT), "data", "checkout", "data:d@v1", "data"]], lv2, env)
        lv_co_req = delta(moto.requests(), before)
        run(["git", "clone", "-q", str(dvc1), str(dvc2)], WORK, env)
        before = moto.requests()
        dvc_co = timed([[str(DVC), "pull", "-q"]], dvc2, env)
        dvc_co_req = delta(moto.requests(), before)
        rows.append(("second machine: data checkout / dvc pull", lv_co, dvc_co))
        same = subprocess.run(["diff", "-rq", str(lv2 / "data"), str(source)], capture_output=True, check=False)
        if same.returncode != 0:
            raise SystemExit(f"labvault's checkout differs from the source: {same.stdout[:500]!r}")

        print(f"\n{args.files} files of 1-8 KiB, moto S3 server on loopback, PostgreSQL at {PG}")
        for label, lv, dv in rows:
            print(f"{label:<44} labvault {lv:8.2f} s   dvc {dv:8.2f} s   ratio {dv / lv:6.1f}x")
        for label, lvr, dvr in (("add/push", lv_req, dvc_req), ("checkout/pull", lv_co_req, dvc_co_req)):
            print(
                f"requests {label:<14} labvault PUT {lvr['PUT']:6d} (all {sum(lvr.values()):6d})   "
                f"dvc PUT {dvr['PUT']:6d} (all {sum(dvr.values()):6d})   "
                f"PUT ratio {lvr['PUT'] / max(dvr['PUT'], 1):.4f}"
            )
    finally:
        moto.stop()
        drop_schema(schema)
    return 0


if __name__ == "__main__":
    sys.exit(main())
