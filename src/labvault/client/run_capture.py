"""What ``labvault run -- CMD`` captures on the machine it runs on when the run lives on a server.

The same capture as a local vault's (``Tracking.create``): the environment document, the git state
and dirty patch (leaving out what ``labvault.lock`` pins and large untracked files), and the config
files byte for byte. Here it is done on the client, whose code and environment they are; the
objects are uploaded first, and the document that names them is sent to ``POST /runs/{id}/capture``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from labvault.errors import ValidationError
from labvault.services.capture.configs import read_configs
from labvault.services.capture.environment import capture_environment
from labvault.services.capture.git import capture_git
from labvault.services.capture.settings import max_untracked_size
from labvault.services.snapshots.lockfile import read_lock
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["capture_run", "read_configs", "upload_configs"]


def capture_run(objects: ObjectStore, *, root: Path, cwd: Path, configs: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Capture, upload the objects, and return the body of ``POST /runs/{id}/capture``."""
    here = cwd.resolve()
    doc: dict[str, Any] = {"cwd": str(here), "pythonhashseed": os.environ.get("PYTHONHASHSEED"), "config": []}
    warnings: list[str] = []
    env_bytes, env_warnings = capture_environment(root)
    warnings.extend(env_warnings)
    limit = max_untracked_size(root)
    try:
        pinned = [root / key for key in read_lock(root)]
    except ValidationError as exc:
        pinned = []
        warnings.append(f"git: the patch may hold pinned data: {exc.message}")
    git = capture_git(here, exclude=pinned, max_untracked=limit)
    warnings.extend(git.warnings)
    with objects.batch():
        doc["environment"] = str(objects.put_bytes(env_bytes))
        doc["config"] = upload_configs(objects, configs)
        if git.info:
            doc["git"] = git.info
        if git.patch:
            doc["patch"] = str(objects.put_bytes(git.patch))
    doc["warnings"] = warnings
    return doc


def upload_configs(objects: ObjectStore, configs: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """Upload config files' bytes (inside the caller's batch); their entries in a capture document."""
    return [{"path": path, "sha256": str(objects.put_bytes(data)), "size": len(data)} for path, data in configs]
