"""``labvault data add``, kept lean: no typer, pydantic or rich on its path.

A snapshot is taken after every change to the data, so its start-up counts: typer and the pydantic
it brings take about 0.15 s to import on a small machine, longer than hashing 200 changed files.
``labvault.cli.entry`` calls :func:`run_add` directly, and the typer command in ``cli/data.py``
calls the same function, so both produce the same output.
"""

from __future__ import annotations

from labvault.cli.render import OUTPUT, human_bytes, print_json, progress

__all__ = ["run_add"]


def run_add(name: str, path: str, *, message: str, json_output: bool) -> None:
    from labvault.vault import Vault

    vault = Vault.open()
    try:
        with progress(f"snapshotting {path}", None) as advance:
            snapshot, created = vault.data.add(name, path, message=message, progress=advance)
    finally:
        vault.close()
    if json_output:
        print_json({**snapshot.to_json(), "created": created})
        return
    OUTPUT.line(f"{snapshot.ref}  {snapshot.content_hash}")
    if created:
        OUTPUT.info(f"{snapshot.file_count} files, {human_bytes(snapshot.total_bytes)}; pinned in labvault.lock")
        for note in snapshot.notes:
            OUTPUT.info(f"note: {note}")
    else:
        OUTPUT.info(f"no change since {snapshot.ref}")
