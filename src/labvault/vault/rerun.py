"""The pipeline rerun of ``vault.reproduce``: every stage of the pipeline in a reproduce workspace,
run again with the cache off under the reproduction's run, with this vault's stores.

The workspace gets its own data and pipeline services, rooted there: the caches they keep (file hashes,
the parsed definition, stage logs, key locks) live in the workspace and go with it, so the project's
own stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from labvault.config import VAULT_DIRNAME

if TYPE_CHECKING:
    from labvault.vault import Vault

__all__ = ["rerun_pipeline"]


def rerun_pipeline(vault: Vault, root: Path, run_id: str, env: Mapping[str, str]) -> tuple[int, str | None]:
    """Rerun every stage of the pipeline at ``root``, cache off, under ``run_id``: ``(0, None)`` when
    every stage ran, else ``(1, why)``."""
    from labvault.services.pipelines.service import Pipelines
    from labvault.services.snapshots.service import DataService

    data = DataService(
        objects=vault.objects, meta=lambda: vault.meta, root=root, vault_dir=vault.dir, user=lambda: vault.user
    )
    svc = Pipelines(
        objects=vault.objects,
        meta=lambda: vault.meta,
        root=root,
        vault_dir=root / VAULT_DIRNAME,
        user=lambda: vault.user,
        runs=lambda: vault.runs,
        data=lambda: data,
    )
    svc.parent_run, svc.use_cache, svc.stage_env = run_id, False, dict(env)
    reports = svc.run(force=True)
    failed = [r for r in reports if r.state == "failed"]
    if failed:
        return 1, failed[0].error or f"stage {failed[0].name} failed"
    return (1, "not every stage ran") if any(r.state != "ran" for r in reports) else (0, None)
