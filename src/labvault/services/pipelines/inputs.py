"""What a stage reads, as the planner and the executors see it: the content hash of a ``data:`` dep
as ``labvault.lock`` pins it (checked out there before the stage runs), the cached outputs of a stage
key, the files of a stored folder tree, the environment a past run recorded, and the deps an executor
is handed (stored first when it runs elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labvault.errors import Conflict, LabvaultError, NotFound, ValidationError
from labvault.refs import DataRef, Digest, parse_ref
from labvault.services.pipelines.hashing import HashCache
from labvault.services.pipelines.spec import Stage
from labvault.services.snapshots.lockfile import LOCK_NAME, read_lock
from labvault.storage.objects.protocol import ObjectStore

if TYPE_CHECKING:
    from labvault.services.snapshots.service import DataService
    from labvault.storage.meta.store import MetaStore

__all__ = ["StageInputs"]


class StageInputs:
    """The reads of ``vault.pipelines`` that feed a stage: its deps, its cache hits, stored trees."""

    def __init__(
        self,
        *,
        objects: ObjectStore,
        meta: Callable[[], MetaStore],
        root: Path,
        vault_dir: Path,
        data: Callable[[], DataService],
    ) -> None:
        self.objects = objects
        self._meta = meta
        self.root = root
        self.vault_dir = vault_dir
        self._data = data

    def old_env(self, digest: str) -> dict[str, Any] | None:
        """The environment a past run recorded under ``digest``; None when it is not stored or unreadable."""
        d = Digest(digest.removeprefix("sha256:"))
        try:
            if not self.objects.has(d):
                return None
            from labvault.safeload import loads_json

            doc = loads_json(self.objects.get_bytes(d), name=f"environment {digest}")
        except (NotFound, ValidationError):
            return None
        return doc if isinstance(doc, dict) else None

    def data_dep(self, dep: str) -> str:
        """The content hash of a ``data:`` dep, as ``labvault.lock`` pins it."""
        ref = parse_ref(dep, expect=DataRef)
        if not isinstance(ref, DataRef):
            raise ValidationError(f"{dep} is not a data reference", hint="write data deps as data:NAME or data:NAME@vN")
        pinned = [e for e in read_lock(self.root).values() if e.ref.name == ref.name]
        if not pinned:
            raise ValidationError(
                f"data dep {dep} is not pinned in {LOCK_NAME}",
                hint=f"check it out once with `labvault data checkout data:{ref.name}@vN PATH`",
            )
        entry = pinned[0]
        if ref.version is not None and ref.version != entry.ref.version:
            raise ValidationError(
                f"a stage wants {dep}, but {LOCK_NAME} pins {entry.ref} at {entry.path}",
                hint=f"check out {dep} with `labvault data checkout {dep} {entry.path}`",
            )
        return str(entry.content_hash)

    def prepare_data_deps(self, stage: Stage) -> None:
        """Check out (verified) every ``data:`` dep at the path labvault.lock pins, if it differs."""
        for dep in stage.deps:
            if not dep.startswith("data:"):
                continue
            self.data_dep(dep)
            name = dep.removeprefix("data:").partition("@")[0]
            data = self._data()
            for status in data.status(name):
                if not status.clean:
                    entry = read_lock(self.root)[status.path]
                    data.checkout(str(entry.ref), self.root / entry.path)

    def cached_outs(self, key: str) -> dict[str, tuple[str, str]] | None:
        from labvault.storage.meta.repos import pipelines as repo

        with self._meta().read() as conn:
            found = repo.get_cached(conn, key.removeprefix("sha256:"))
        if found is None:
            return None
        try:
            return {
                str(p): ("sha256:" + Digest(str(v[0])).hex, "dir" if v[1] == "dir" else "file")
                for p, v in found.items()
            }
        except (TypeError, IndexError, ValidationError):
            return None  # an unreadable row is a miss: the stage runs again

    def tree_files(self, digest: str) -> dict[str, str] | None:
        """path -> sha256 of every file of a stored folder tree; None when it is not a stored tree."""
        from labvault.services.snapshots.flat import load_flat

        d = Digest(digest.removeprefix("sha256:"))
        try:
            if not self.objects.has(d):
                return None
            head = self.objects.get_bytes(d)[:40]
            if not head.startswith(b'{"entries":'):
                return None
            flat = load_flat(self.objects, self.vault_dir, d)
        except LabvaultError:
            return None
        return {p: v[0] for p, v in flat.files.items()}

    def is_tree(self, digest: str) -> bool:
        return self.tree_files(digest) is not None

    def job_deps(self, stage: Stage, deps: dict[str, str], *, store: bool) -> dict[str, str]:
        """path -> content hash of every dep, for an executor; with ``store``, put in the object store first
        (a remote executor materialises them from there), ``data:`` deps at the path the lock pins. The
        stage's params files go too: a command reads them, as DVC's params are deps."""
        from labvault.services.pipelines.outputs import store_output

        deps = dict(deps)
        if store:
            for file in sorted({k.rpartition(":")[0] for k in stage.params}):
                digest = HashCache(self.root, self.vault_dir).digest(file) if file not in deps else None
                if digest is not None:
                    deps[file] = digest
        out: dict[str, str] = {}
        pinned = {f"data:{e.ref.name}": e for e in read_lock(self.root).values()}
        for dep, digest in deps.items():
            if dep.startswith("data:"):
                entry = pinned.get(dep.partition("@")[0])
                if entry is not None:
                    out[entry.path] = str(entry.content_hash)
                continue
            out[dep] = digest
        if store:
            with self.objects.batch():
                for dep in [d for d in deps if not d.startswith("data:")]:
                    stored, _kind = store_output(self.objects, self.root, self.vault_dir, dep)
                    if stored != deps[dep]:
                        raise Conflict(
                            f"dep {dep} changed while the pipeline ran", hint="run the pipeline again when it is stable"
                        )
        return out
