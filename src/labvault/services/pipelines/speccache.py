"""The resolved pipeline, cached: a no-op ``pipeline run`` or ``status`` parses no YAML.

``.labvault/cache/pipelines/spec.json`` holds the resolved stages with the stat (inode, size, mtime,
ctime) of every file they were read from (``labvault.yaml`` and the params files) and a checksum of
itself. When every file still has its stat, and none was modified within the clock tick the cache
was written in, the stages come from the cache; otherwise the definition is parsed and validated
again (:func:`labvault.services.pipelines.spec.load_pipeline`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from labvault.services.pipelines.hashing import cache_dir
from labvault.services.pipelines.spec import Pipeline, Stage
from labvault.services.snapshots.statcache import fs_clock_ns
from labvault.storage.contained import write_text

__all__ = ["cached_pipeline"]

_FORMAT = "labvault.pipeline-spec/1"


def _sig(root: Path, files: list[str]) -> list[Any] | None:
    out: list[Any] = []
    for rel in files:
        try:
            st = os.stat(root / rel)
        except OSError:
            return None
        out.append([rel, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return out


def _load(path: Path, root: Path) -> Pipeline | None:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(256 * 1024 * 1024))
        body = json.dumps(doc["body"], sort_keys=True, separators=(",", ":"))
        if doc.get("format") != _FORMAT or doc.get("checksum") != hashlib.sha256(body.encode()).hexdigest():
            return None
        b = doc["body"]
        sig = b["sig"]
        if _sig(root, [s[0] for s in sig]) != sig or any(max(s[3], s[4]) >= b["stamp"] for s in sig):
            return None
        stages = {s["name"]: Stage.from_json(s) for s in b["stages"]}
        upstream = {k: tuple(v) for k, v in b["upstream"].items()}
        if set(upstream) != set(stages):
            return None
        return Pipeline(stages, upstream, files=tuple(s[0] for s in sig))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def cached_pipeline(root: Path, vault_dir: Path) -> Pipeline:
    """The resolved pipeline, from the cache when its files are unchanged."""
    folder = cache_dir(vault_dir)
    path = folder / "spec.json"
    hit = _load(path, root)
    if hit is not None:
        return hit
    from labvault.services.pipelines.spec import load_pipeline

    folder.mkdir(parents=True, exist_ok=True)
    stamp = fs_clock_ns(folder)
    pipeline = load_pipeline(root)
    sig = _sig(root, list(pipeline.files))
    if sig is not None:
        body = {
            "sig": sig,
            "stamp": stamp,
            "stages": [s.to_json() for s in pipeline.stages.values()],
            "upstream": {k: list(v) for k, v in pipeline.upstream.items()},
        }
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        doc = {"body": body, "checksum": hashlib.sha256(text.encode()).hexdigest(), "format": _FORMAT}
        with contextlib.suppress(OSError):  # a cache: a read-only vault parses again next time
            write_text(path, json.dumps(doc, sort_keys=True, separators=(",", ":")))
    return pipeline
