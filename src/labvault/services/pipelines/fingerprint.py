"""The environment fingerprint of a stage key: the Python version and the installed-distribution set.

Read by the environment capture of tracking (``capture/environment.py``: the same Python version and
distribution list a run records), reduced to what decides a result:
``{"python": "3.11.9", "packages": {"numpy": "1.26.4", ...}}``. Listing the distributions costs tens
of milliseconds, so the document is cached in ``.labvault/cache/pipelines/env.json``, keyed on the
stat of every ``sys.path`` folder (installing, upgrading or removing a distribution adds or removes a
``.dist-info`` folder there, which changes the folder's mtime); the cache carries a checksum of itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from labvault.storage.contained import write_text

__all__ = ["Fingerprint", "current_fingerprint", "describe_change"]

_FORMAT = "labvault.pipeline-env/1"


class Fingerprint:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        self.digest = "sha256:" + hashlib.sha256(self.text.encode()).hexdigest()


def _path_key() -> str:
    parts = [sys.version, sys.executable]
    # Not sys.path[0]: the script's folder or the current one, which differs between callers and
    # holds no installed distributions.
    for entry in sys.path[1:]:
        try:
            st = os.stat(entry or ".")
        except OSError:
            parts.append(f"{entry}:-")
            continue
        parts.append(f"{entry}:{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def _compute() -> dict[str, Any]:
    # Only on a cache miss: listing the distributions takes longer than a no-op run.
    from labvault.services.capture.environment import python_and_packages

    python, listed = python_and_packages()
    packages = {str(p["name"]).lower(): str(p["version"]) for p in listed}
    return {"packages": dict(sorted(packages.items())), "python": python}


def current_fingerprint(cache_folder: Path) -> Fingerprint:
    """This interpreter's fingerprint, from the cache when no ``sys.path`` folder changed."""
    path = cache_folder / "env.json"
    key = _path_key()
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(16 * 1024 * 1024))
        body = json.dumps(doc["env"], sort_keys=True, separators=(",", ":"))
        if (
            doc.get("format") == _FORMAT
            and doc.get("key") == key
            and doc.get("checksum") == hashlib.sha256(body.encode()).hexdigest()
        ):
            return Fingerprint(doc["env"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    env = _compute()
    body = json.dumps(env, sort_keys=True, separators=(",", ":"))
    doc = {"checksum": hashlib.sha256(body.encode()).hexdigest(), "env": env, "format": _FORMAT, "key": key}
    try:
        cache_folder.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(doc, sort_keys=True))
    except OSError:
        pass  # a cache: a read-only vault recomputes it next time
    return Fingerprint(env)


def describe_change(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """``python 3.11.9 -> 3.12.1; scikit-learn 1.4.2 -> 1.5.0; +polars 1.0.0`` (the first few)."""
    if old is None:
        return "environment changed (the old one is not recorded here)"
    changes: list[str] = []
    if old.get("python") != new.get("python"):
        changes.append(f"python {old.get('python')} -> {new.get('python')}")
    a, b = old.get("packages") or {}, new.get("packages") or {}
    for name in sorted(set(a) | set(b)):
        if name not in b:
            changes.append(f"-{name} {a[name]}")
        elif name not in a:
            changes.append(f"+{name} {b[name]}")
        elif a[name] != b[name]:
            changes.append(f"{name} {a[name]} -> {b[name]}")
    shown = "; ".join(changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")
    return shown or "environment changed"
