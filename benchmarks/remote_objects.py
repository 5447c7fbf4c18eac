"""Benchmark: labvault's remote object store against DVC's S3 remote, on the same files and server.

Usage: ``.venv/bin/python benchmarks/remote_objects.py [--files 20000]``

Starts a moto S3 server process on loopback (``tests/s3server.py``), installs DVC with its S3 plugin
into ``.bench/dvc-venv`` if absent (``uv venv`` + ``uv pip install 'dvc[s3]'``), makes N files of
1-8 KiB under ``.bench/remote-objects/``, and compares, as whole processes, requests counted by the
server itself (moto's request recorder):

- upload: labvault puts every file into ``s3://…/lv`` in one batch (hashing included), beside
  ``dvc push`` of the same files to ``s3://…/dvc`` (``dvc add`` timed apart: it hashes them);
- download on a second machine (empty cache): labvault materialises every file through its
  read-through cache, beside ``dvc pull`` in a fresh copy of the DVC project;
- a second labvault download with the same cache (it should download nothing).

This measures the object store only; ``benchmarks/team.py`` runs whole ``labvault data`` commands.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from _harness import DVC, ensure_dvc
from _seed import make_files

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.s3server import S3Server  # noqa: E402 - the repository root is put on sys.path first

BENCH = REPO / ".bench"
WORK = BENCH / "remote-objects"
LV_PYTHON = REPO / ".venv" / "bin" / "python"

UPLOAD = """
import json, sys
from pathlib import Path
from labvault.storage.objects.opener import open_object_store
root = Path(sys.argv[2])
files = sorted(p for p in root.rglob("*") if p.is_file())
store = open_object_store(sys.argv[1])
with store.batch():
    digests = {p.relative_to(root).as_posix(): store.put_file(p).hex for p in files}
Path(sys.argv[3]).write_text(json.dumps(digests))
"""

DOWNLOAD = """
import json, sys
from pathlib import Path
from labvault.refs import Digest
from labvault.storage.contained import Dest
from labvault.storage.objects.materialize import materialize_into
from labvault.storage.objects.opener import open_object_store
store = open_object_store(sys.argv[1], cache_dir=Path(sys.argv[2]), cache_size=10 << 30)
with Dest.open(Path(sys.argv[4])) as into:  # as `data checkout` writes a snapshot's files
    for rel, hexd in json.loads(Path(sys.argv[3]).read_text()).items():
        materialize_into(store, Digest(hexd), into, rel)
"""


class Recorder:
    """Requests counted by the moto server itself, by HTTP method."""

    def __init__(self, server: S3Server) -> None:
        self.api = f"{server.endpoint}/moto-api/recorder"

    def _post(self, what: str) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.api}/{what}", method="POST")).read()

    def start(self) -> None:
        self._post("reset-recording")
        self._post("start-recording")

    def stop(self) -> Counter[str]:
        self._post("stop-recording")
        data = urllib.request.urlopen(f"{self.api}/download-recording").read().decode()
        counts: Counter[str] = Counter()
        decoder, pos = json.JSONDecoder(), 0
        while (pos := _skip_space(data, pos)) < len(data):  # records are concatenated JSON documents
            record, pos = decoder.raw_decode(data, pos)
            counts[record["method"]] += 1
        return counts


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def measured(label: str, recorder: Recorder, cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, object]:
    recorder.start()
    seconds = timed(cmd, cwd, env)
    counts = recorder.stop()
    row = {"step": label, "seconds": round(seconds, 2), **{m: counts.get(m, 0) for m in ("PUT", "GET", "HEAD", "POST")}}
    print(f"  {label:<34} {seconds:8.2f} s   PUT {row['PUT']:>6}  GET {row['GET']:>6}  HEAD {row['HEAD']:>6}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    args = parser.parse_args()
    ensure_dvc(s3=True)
    shutil.rmtree(WORK, ignore_errors=True)
    data = WORK / "project" / "data"
    make_files(data, args.files, repeatable=True)
    os.environ["MOTO_RECORDER_FILEPATH"] = str(WORK / "moto_recording")  # the server's request log
    server = S3Server().start()
    try:
        bucket = server.bucket("bench")
        empty = WORK / "aws-empty"  # DVC's botocore refuses /dev/null as a config file
        empty.write_text("")
        aws = {**server.env(), "AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty)}
        env = {**os.environ, **aws, "DVC_NO_ANALYTICS": "1", "NO_COLOR": "1"}
        rec = Recorder(server)
        dvc = str(DVC)
        print(f"{args.files} files of 1-8 KiB, moto S3 server process on loopback")
        lv_url = f"s3://{bucket}/lv"
        manifest = WORK / "digests.json"
        rows = [
            measured(
                "labvault put (hash + upload)",
                rec,
                [str(LV_PYTHON), "-c", UPLOAD, lv_url, str(data), str(manifest)],
                WORK,
                env,
            )
        ]
        project = WORK / "project"
        timed([dvc, "init", "--no-scm", "-q"], project, env)
        timed([dvc, "remote", "add", "-d", "store", f"s3://{bucket}/dvc"], project, env)
        timed([dvc, "remote", "modify", "store", "endpointurl", server.endpoint], project, env)
        add = timed([dvc, "add", "-q", "data"], project, env)
        print(f"  {'dvc add (hash, local cache)':<34} {add:8.2f} s")
        rows.append(measured("dvc push", rec, [dvc, "push", "-q"], project, env))
        clone = WORK / "clone"
        clone.mkdir()
        shutil.copytree(project / ".dvc", clone / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
        shutil.copy(project / "data.dvc", clone / "data.dvc")
        cache = WORK / "lv-cache"
        down = [str(LV_PYTHON), "-c", DOWNLOAD, lv_url, str(cache), str(manifest)]
        rows.append(measured("labvault checkout (empty cache)", rec, [*down, str(WORK / "lv-out1")], WORK, env))
        rows.append(measured("dvc pull (fresh clone)", rec, [dvc, "pull", "-q"], clone, env))
        rows.append(measured("labvault checkout (same cache)", rec, [*down, str(WORK / "lv-out2")], WORK, env))
        by = {str(r["step"]): r for r in rows}
        lv_up, dvc_up = by["labvault put (hash + upload)"], by["dvc push"]
        lv_down, dvc_down = by["labvault checkout (empty cache)"], by["dvc pull (fresh clone)"]
        print("ratios (DVC / labvault):")
        print(
            f"  upload time: {float(dvc_up['seconds']) / float(lv_up['seconds']):.1f}x vs push alone, "
            f"{(float(dvc_up['seconds']) + add) / float(lv_up['seconds']):.1f}x vs add + push"
        )
        puts = (int(dvc_up["PUT"]), int(lv_up["PUT"]))
        print(f"  upload PUTs: {puts[0]} / {puts[1]} = {puts[0] / max(1, puts[1]):.0f}x")
        print(
            f"  download time: {float(dvc_down['seconds']) / float(lv_down['seconds']):.1f}x; "
            f"GETs: {int(dvc_down['GET'])} / {int(lv_down['GET'])}"
        )
        same = sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())
        for out in (WORK / "lv-out1", WORK / "lv-out2", clone / "data"):
            assert all(
                (out / rel).read_bytes() == (data / rel).read_bytes() for rel in same[:: max(1, len(same) // 500)]
            )
        print("checked: every download is byte for byte the source (sampled)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
