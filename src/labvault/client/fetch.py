"""Writing whole trees from a server: model versions (``models get``, ``lv.models.get``), data
snapshots (``get data:``) and run artifacts (``runs artifacts -o``).

The services' own tree walkers and contained writers (``write_version``, ``download_artifacts``) do
the writing, reading every object verified from the client's cache (:class:`HttpObjectStore`). The
objects reach that cache through the one batched path data checkout uses
(``HttpObjectStore.prefetch``: up to 1,000 small objects per ``POST /objects/batch/get``, larger
ones streamed alone): first the tree's folders, a level per request, then the files the writer
will write (not those already in place), together. A model of 500 small files is a handful of
requests rather than one per file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from labvault.errors import IntegrityError, NotFound
from labvault.refs import Digest
from labvault.services.registry.layout import write_version
from labvault.services.snapshots.flat import load_flat
from labvault.services.tracking.artifacts import artifact_name
from labvault.services.tracking.download import download_artifacts

if TYPE_CHECKING:
    from labvault.client.objects import HttpObjectStore
    from labvault.entities import Run
    from labvault.services.tracking.download import DownloadedFile

__all__ = ["fetch_folders", "write_artifacts", "write_tree"]


def fetch_folders(objects: HttpObjectStore, root: Digest) -> None:
    """Fetch the tree ``root`` and every folder below it into the cache, a level per request.

    Only a head start: the writer reads every tree again (verified), so one missing or corrupt on
    the server is left for it to report in its own words."""
    try:
        load_flat(objects, None, root, prefetch=objects.prefetch)
    except (IntegrityError, NotFound):
        return


def write_tree(objects: HttpObjectStore, root: Digest, dest: Path, rel: str) -> Path:
    """``write_version`` of the tree ``root`` (a model version's or a snapshot's), fetched in batches."""
    fetch_folders(objects, root)
    return write_version(objects, root, dest, rel, prefetch=objects.prefetch)


def write_artifacts(objects: HttpObjectStore, run: Run, dest: Path, *, name: str | None) -> list[DownloadedFile]:
    """``download_artifacts`` of a run's artifacts (or the one called ``name``), fetched in batches."""
    wanted = artifact_name(name) if name is not None else None
    for artifact in run.artifacts:
        if artifact.kind == "tree" and wanted in (None, artifact.name):
            fetch_folders(objects, artifact.digest)
    return download_artifacts(objects, run, dest, name=name, prefetch=objects.prefetch)
