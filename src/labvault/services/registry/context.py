"""What the registry's use cases share: the stores, the audit log, identity, and the sibling services
(tracking, data snapshots) reached through small protocols so that this package never imports them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from labvault.refs import parse_semver
from labvault.services.audit import AuditLog
from labvault.services.registry.policy import POLICY_FILE, PolicyFile, load_policy
from labvault.storage.meta.store import MetaStore
from labvault.storage.objects.protocol import ObjectStore

__all__ = ["DataSource", "RegistryContext", "RunSource", "bump_version", "parse_version"]


class RunSource(Protocol):
    """What the registry needs from tracking (``vault.runs``)."""

    def get(self, ref: str) -> Any: ...

    def export(self, ref: str) -> dict[str, Any]: ...


class DataSource(Protocol):
    """What the drift gate needs from data snapshots (``vault.data``)."""

    def get(self, ref: str) -> Any: ...

    def diff(self, a: str, b: str) -> Any: ...


@dataclass
class RegistryContext:
    objects: ObjectStore
    meta: MetaStore
    audit: AuditLog
    root: Path
    vault_dir: Path
    user: Callable[[], str]
    runs: Callable[[], RunSource | None] = lambda: None
    data: Callable[[], DataSource | None] = lambda: None
    _policy: tuple[tuple[int, int], PolicyFile] | None = field(default=None, repr=False)
    # (project, model) -> the highest version as of this process's last registration of it, so that
    # the next automatic number is picked without a read; the write transaction checks the guess.
    highest_seen: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    # Models another writer registered behind this process's back: picked from a fresh read each time.
    contended: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def policy_hash(self) -> str | None:
        """sha256 of ``labvault.yaml`` as it is now, read without validating it: rollbacks and the
        other moves that skip the gates record it too, and must work with a broken policy file."""
        return _file_hash(self.root / POLICY_FILE)

    def policy(self) -> PolicyFile:
        """``labvault.yaml``, re-read only when the file changed (size or mtime)."""
        path = self.root / POLICY_FILE
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, -1)
        if self._policy is not None and self._policy[0] == stamp:
            return self._policy[1]
        loaded = load_policy(self.root)
        self._policy = (stamp, loaded)
        return loaded


def _file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # missing or unreadable: nothing to record
        return None


def parse_version(text: str) -> tuple[int, int, int]:
    return parse_semver(text)


def bump_version(highest: str | None, bump: str | None) -> str:
    """0.1.0 first; then the next patch, or the ``bump`` asked for, from the highest version."""
    if highest is None and bump is None:
        return "0.1.0"
    major, minor, patch = parse_version(highest) if highest else (0, 0, 0)
    if bump == "major":
        chosen = f"{major + 1}.0.0"
    elif bump == "minor":
        chosen = f"{major}.{minor + 1}.0"
    else:
        chosen = f"{major}.{minor}.{patch + 1}"
    parse_semver(chosen)  # the highest version may already be at the limit
    return chosen
