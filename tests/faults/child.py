"""The process the reliability suite kills: one operation, called over and over, acknowledged on a pipe.

Run as a script (``python child.py OP PROJECT SEED START COUNT ACK_FD [STATE]``). It writes JSON lines
to the file descriptor ``ACK_FD``: ``{"ready": ...}`` once set up, then for each call ``i`` from
``START``, ``{"begin": i}`` before it and ``{"ack": i, ...}`` once it returned. A call that fails
writes ``{"fail": i, ...}`` and ends the process. Call ``i`` is a pure function of ``SEED`` and
``i``, so the same call can be retried after a kill.

Operations on the real ``labvault`` executable (``object-put``, ``data-add``, ``gc``) run it in a
subprocess of this one (kill the process group); the others use the public Python API.

The content helpers are imported by the tests as well, to know what each call stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SMALL = 1024 * 1024  # objects up to this size are packed; larger ones are files of their own
DATASET_FILES = 120


def rng_for(seed: int, *parts: object) -> random.Random:
    return random.Random("-".join(str(p) for p in (seed, *parts)))


def put_files(seed: int, i: int, folder: Path) -> list[Path]:
    """The files ``object put`` call ``i`` stores: small ones (packed) and a large one (a file of its own)."""
    rng = rng_for(seed, "put", i)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [rng.randint(100, 24_000) for _ in range(30)]
    sizes.append(SMALL + rng.randint(1, 3 * SMALL))
    files = []
    for n, size in enumerate(sizes):
        path = folder / f"f{n:02}.bin"
        path.write_bytes(rng.randbytes(size))
        files.append(path)
    return files


def make_dataset(seed: int, folder: Path) -> None:
    """The dataset's first state: ``DATASET_FILES`` small files in five folders, and one large file."""
    rng = rng_for(seed, "dataset")
    for j in range(DATASET_FILES):
        path = folder / f"d{j % 5}" / f"f{j:03}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(1, 8192)))
    (folder / "big.bin").write_bytes(rng.randbytes(SMALL + 4096))


def mutate_dataset(seed: int, i: int, folder: Path) -> None:
    """Call ``i``'s change: rewrite some files, add one, and every other call the large file.

    Each write has fixed content for ``i``, so a change cut short by a kill is completed by the retry.
    """
    rng = rng_for(seed, "mutate", i)
    for j in rng.sample(range(DATASET_FILES), 30):
        (folder / f"d{j % 5}" / f"f{j:03}.bin").write_bytes(rng.randbytes(rng.randint(1, 8192)))
    (folder / f"new-{i:04}.bin").write_bytes(rng.randbytes(rng.randint(1, 4096)))
    if i % 2 == 0:
        (folder / "big.bin").write_bytes(rng.randbytes(SMALL + rng.randint(1, 2 * SMALL)))


def tree_summary(files: dict[str, str]) -> str:
    """One digest for a ``{relative path: sha256 hex}`` map (to compare a snapshot with its source)."""
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def scan_summary(folder: Path) -> str:
    files = {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }
    return tree_summary(files)


def model_files(seed: int, i: int, folder: Path) -> str:
    """Call ``i``'s model folder (every fourth ``model.bin`` is large); returns model.bin's sha256."""
    rng = rng_for(seed, "model", i)
    folder.mkdir(parents=True, exist_ok=True)
    weights = rng.randbytes(SMALL + rng.randint(1, 50_000) if i % 4 == 0 else rng.randint(1, 40_000))
    (folder / "model.bin").write_bytes(weights)
    (folder / "metrics.json").write_text(json.dumps({"auc": round(rng.uniform(0.5, 1.0), 6)}))
    return hashlib.sha256(weights).hexdigest()


def metric_value(i: int) -> float:
    return 1.0 / (i + 1)


def promotion(i: int) -> tuple[str, str]:
    """Call ``i`` moves ``(alias, version)``: the two aliases in turn, each to a different version each time."""
    return ("staging", "prod")[i % 2], f"2.0.{(i // 2) % 3}"


# -- the child process ------------------------------------------------------------------------


def _labvault(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("labvault", path=str(Path(sys.executable).parent)) or "labvault"
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run(
        [exe, *args], cwd=project, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )


def _cli_call(project: Path, *args: str) -> dict[str, Any]:
    proc = _labvault(project, *args)
    if proc.returncode != 0:
        raise RuntimeError(f"labvault {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return {"out": json.loads(proc.stdout)}


def main(argv: list[str]) -> int:
    op, project, seed, start, count, ack_fd = argv[:6]
    state = argv[6] if len(argv) > 6 else ""
    root = Path(project)
    ack = os.fdopen(int(ack_fd), "w", buffering=1)

    def say(**doc: object) -> None:
        ack.write(json.dumps(doc) + "\n")
        ack.flush()

    seed_n = int(seed)
    call: Callable[[int], dict[str, Any]]
    ready: object = True
    if op == "object-put":

        def call(i: int) -> dict[str, Any]:
            files = put_files(seed_n, i, root / "scratch" / f"put-{i}")
            out = _cli_call(root, "object", "put", "--json", *map(str, files))["out"]
            return {"digests": [doc["id"] for doc in out]}
    elif op == "data-add":

        def call(i: int) -> dict[str, Any]:
            mutate_dataset(seed_n, i, root / "ds")
            summary = scan_summary(root / "ds")
            return {"ref": _cli_call(root, "data", "add", "ds", "ds", "--json")["out"]["ref"], "summary": summary}
    elif op == "gc":

        def call(i: int) -> dict[str, Any]:
            return {"report": _cli_call(root, "gc", "--grace", "0", "--json")["out"]}
    else:
        import labvault as lv

        vault = lv.open(str(root))
        if op == "log-metric":
            run = lv.start_run(project="faults", capture_output=False, run_id=state or None)
            ready = run.id

            def call(i: int) -> dict[str, Any]:
                lv.log_metric("loss", metric_value(i), step=i)
                return {}
        elif op == "register":

            def call(i: int) -> dict[str, Any]:
                digest = model_files(seed_n, i, root / "models" / f"m{i}")
                version, _ = vault.registry.register("faults/model", root / "models" / f"m{i}", version=f"1.0.{i}")
                return {"ref": version.ref, "model": digest}
        elif op == "promote":

            def call(i: int) -> dict[str, Any]:
                alias, version = promotion(i)
                decision = vault.registry.promote(f"faults/model@{version}", alias, reason=f"call {i}")
                return {"alias": alias, "version": version, "moved": decision.moved, "seq": decision.audit_seq}
        else:
            raise SystemExit(f"unknown operation {op!r}")

    say(ready=ready, pid=os.getpid())
    for i in range(int(start), int(start) + int(count)):
        say(begin=i, at=time.monotonic())
        try:
            result = call(i)
        except Exception as exc:  # reported to the test, which fails on it
            say(fail=i, error=f"{type(exc).__name__}: {exc}")
            return 1
        say(ack=i, at=time.monotonic(), **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
