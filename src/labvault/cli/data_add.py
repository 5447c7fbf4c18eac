"""``labvault data add``, kept lean: no typer, pydantic or rich on its path.

A snapshot is taken after every change to the data, so its start-up counts: typer and the pydantic
it brings take about 0.15 s to import on a small machine, longer than hashing 200 changed files.
``labvault.cli.entry`` calls :func:`run_add` directly, and the typer command in ``cli/data.py``
calls the same function, so both produce the same output.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from labvault.cli.render import OUTPUT, human_bytes, print_json, progress

if TYPE_CHECKING:
    from labvault.services.snapshots.gitignore import GitIgnored

__all__ = ["run_add"]


def run_add(name: str, path: str, *, message: str, json_output: bool, gitignore: bool = True) -> None:
    from labvault.cli.context import open_vault

    vault = open_vault()  # a ServerVault through a server: the files are hashed here, objects sent there
    try:
        with progress(f"snapshotting {path}", None) as advance:
            snapshot, created = vault.data.add(name, path, message=message, progress=advance)
        ignored = vault.data.ignore_in_git(path) if gitignore else None
    finally:
        vault.close()
    if ignored is not None:
        _report_gitignore(ignored, path, snapshot.kind)
    if json_output:
        doc = {**snapshot.to_json(), "created": created}
        if ignored is not None:
            doc["gitignore"] = {"line": ignored.line, "added": ignored.added, "tracked": list(ignored.tracked)}
        print_json(doc)
        return
    OUTPUT.line(f"{snapshot.ref}  {snapshot.content_hash}")
    if created:
        OUTPUT.info(f"{snapshot.file_count} files, {human_bytes(snapshot.total_bytes)}; pinned in labvault.lock")
        for note in snapshot.notes:
            OUTPUT.info(f"note: {note}")
    else:
        OUTPUT.info(f"no change since {snapshot.ref}")


def _report_gitignore(ignored: GitIgnored, path: str, kind: str) -> None:
    if ignored.added:
        OUTPUT.info(f"added {ignored.line} to .gitignore: labvault.lock pins the data, git need not store it")
    elif ignored.reason not in ("already in .gitignore", "git already ignores it"):
        OUTPUT.info(f"not added to .gitignore ({ignored.reason}); use --no-gitignore to skip this step")
    if ignored.tracked:
        import shlex

        count = len(ignored.tracked)
        files = f"{count} file{'s' if count != 1 else ''}"
        untrack = f"git rm {'-r ' if kind == 'dir' else ''}--cached {shlex.quote(path)}"
        sys.stderr.write(
            f"warning: git tracks {ignored.path} ({files}), so every commit still stores the data\n"
            f"hint: `{untrack}` stops tracking it (the files stay on disk), then commit\n"
        )
