"""``vault.runs`` through a server: the reading and administrative side (list with the filter
language, get, export, history, compare, delete/restore, reproductions, artifact downloads).

The write side (create, log, end; spooled) is :class:`~labvault.client.tracking.TrackingWrites`,
which :class:`ServerRuns` inherits. Filters, sorting and every rule run on the server; answers are
decoded into the entities a local vault returns, so the CLI renders both the same.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from labvault.client import decode
from labvault.client.tracking import TrackingWrites
from labvault.entities import MetricPoint, Run
from labvault.services.tracking.liveness import process_gone

if TYPE_CHECKING:
    from labvault.client.vault import ServerVault
    from labvault.services.tracking.download import DownloadedFile

__all__ = ["ServerRuns"]


def _run_path(ref: str) -> str:
    # The server resolves run:<id>, ids and prefixes; quoting keeps the reference one path segment.
    return f"/runs/{quote(ref.strip(), safe=':')}"


class ServerRuns(TrackingWrites):
    def __init__(self, owner: ServerVault) -> None:
        self.owner = owner
        self.transport = owner.transport

    def get(self, ref: str) -> Run:
        return decode.run(self.transport.request("GET", _run_path(ref)))

    def resolve(self, ref: str) -> str:
        """The full id of ``run:<id>``, a bare id or a unique prefix (the server resolves it)."""
        return self.get(ref).id

    def list(
        self,
        *,
        project: str | None = None,
        filter: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        deleted: bool = False,
    ) -> builtins.list[Run]:
        """Runs matching ``filter`` (docs/tracking.md), newest first by default."""
        if limit == 0:  # the server's limit is 1 or more; none is none
            return []
        params = {"project": project, "filter": filter, "sort": sort, "limit": limit, "deleted": deleted}
        return decode.listing(self.transport.request("GET", "/runs", params=params), decode.run, "run list")

    def export(self, ref: str) -> dict[str, Any]:
        """The self-contained ``run.yaml`` document of a run."""
        doc = self.transport.request("GET", f"{_run_path(ref)}/export")
        return decode.Doc(doc, "run export").raw

    def history(self, ref: str, key: str | None = None) -> dict[str, builtins.list[MetricPoint]]:
        return decode.metric_history(self.transport.request("GET", f"{_run_path(ref)}/history", params={"key": key}))

    def compare(self, refs: Sequence[str]) -> dict[str, Any]:
        doc = self.transport.request("GET", "/runs/compare", params={"ref": [r.strip() for r in refs]})
        return decode.Doc(doc, "run comparison").raw

    def process_gone(self, *, status: str, pid: object, host: str | None) -> bool:
        """True when a running run's process on this host no longer exists (SIGKILL, crash)."""
        return process_gone(status=status, pid=pid, host=host)

    def delete(self, ref: str) -> Run:
        return decode.run(self.transport.request("DELETE", _run_path(ref)))

    def restore(self, ref: str) -> Run:
        return decode.run(self.transport.request("POST", f"{_run_path(ref)}/restore"))

    def reproductions(self, ref: str) -> builtins.list[dict[str, Any]]:
        """The run's reruns by ``labvault reproduce``, oldest first (ref, verdict, status, times)."""
        found = self.transport.request("GET", f"{_run_path(ref)}/reproductions")
        return decode.listing(found, lambda r: decode.Doc(r, "reproduction").raw, "reproductions")

    def download_artifacts(
        self, ref: str, dest: str | os.PathLike[str], *, name: str | None = None
    ) -> builtins.list[DownloadedFile]:
        """Write the run's artifacts (or the one called ``name``) under ``dest``, each file verified."""
        # Here, as Tracking.download_artifacts does: every lv.start_run through a server loads this
        # module, and the writers of trees and files are not on its way.
        from labvault.client.fetch import write_artifacts

        return write_artifacts(self.owner.objects, self.get(ref), Path(dest), name=name)
