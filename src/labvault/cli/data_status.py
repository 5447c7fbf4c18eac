"""``labvault data status``, kept lean: no typer, SQLAlchemy, pydantic or rich on its path: it
reads ``labvault.lock`` and the object store through ``vault.data``, never the metadata database.

``labvault.cli.entry`` calls :func:`run_status` directly for ``labvault data status ...`` (the hot
command of a data workflow), and the typer command in ``cli/data.py`` calls the same function, so
both produce the same output.
"""

from __future__ import annotations

from pathlib import Path

from labvault.cli.render import OUTPUT, print_json

__all__ = ["run_status"]


def run_status(name: str | None, path: str | None, *, json_output: bool) -> None:
    from labvault.cli.context import open_vault
    from labvault.refs import validate_name

    if name is not None and path is None and ("/" in name or Path(name).exists()):
        name, path = None, name  # `data status PATH`: a path is never a valid dataset name
    if name is not None:
        validate_name(name, what="dataset name")
    with open_vault() as vault:
        statuses = vault.data.status(name, path)
    if json_output:
        print_json([s.to_json() for s in statuses])
        return
    for s in statuses:
        if s.missing:
            OUTPUT.line(f"{s.path}  {s.ref}  missing (run `labvault data checkout` to restore it)")
            continue
        if s.clean:
            OUTPUT.line(f"{s.path}  {s.ref}  clean")
            continue
        counts = [
            f"{len(v)} {k}"
            for k, v in (("added", s.added), ("removed", s.removed), ("modified", s.modified), ("changing", s.changing))
            if v
        ]
        OUTPUT.line(f"{s.path}  {s.ref}  " + ", ".join(counts))
        for label, paths in (("added", s.added), ("removed", s.removed), ("modified", s.modified)):
            for p in paths:
                OUTPUT.line(f"  {label:<9}{p}")
        for p in s.changing:
            OUTPUT.line(f"  {'changing':<9}{p} (changed while being read; run status again)")
