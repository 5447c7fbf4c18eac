"""Plumbing for scripts and debugging, like git's: object put, cat, ls."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from labvault.cli.context import open_vault
from labvault.cli.render import OUTPUT, human_bytes, print_json
from labvault.errors import ValidationError

__all__ = ["app"]

app = typer.Typer(help="Low-level access to the content-addressed object store.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("put")
def put(
    files: list[Path] = typer.Argument(..., help="Files to store."),
    json_output: bool = JSON,
) -> None:
    """Store files; print sha256:<hex> for each. Unreferenced objects are collected by gc later."""
    for f in files:
        if not f.is_file():
            what = "a folder" if f.is_dir() else "not found"
            raise ValidationError(f"{f}: {what}", hint="object put takes regular files")
    results = []
    with open_vault() as vault, vault.objects.batch():
        for f in files:
            results.append((f, vault.objects.put_file(f), f.stat().st_size))
    if json_output:
        print_json([{"path": str(f), "id": d.hex, "ref": str(d), "size": n} for f, d, n in results])
    else:
        for f, d, _ in results:
            OUTPUT.line(f"{d}  {f}" if len(files) > 1 else str(d))


@app.command("cat")
def cat(
    ref: str = typer.Argument(..., help="sha256:<hex> or a unique prefix of 8+ hex digits."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write to this file (renamed into place once verified) instead of stdout."
    ),
) -> None:
    """Write an object's verified bytes to stdout or a file; a corrupt object writes nothing (exit 5)."""
    with open_vault() as vault:
        digest = vault.objects.resolve_prefix(ref)
        if output is not None:
            vault.objects.materialize(digest, output)
            return
        # Verified before the first byte is printed: a corrupt object puts nothing on stdout.
        with vault.objects.open(digest, verify=True) as src:
            while src.read(1 << 20):
                pass
        with vault.objects.open(digest, verify=True) as src:
            out = sys.stdout.buffer
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.flush()


@app.command("ls")
def ls(json_output: bool = JSON) -> None:
    """List stored objects with their sizes."""
    from datetime import UTC, datetime

    from labvault.entities import format_time

    with open_vault() as vault:
        infos = list(vault.objects.iter_objects())
    rows: list[dict[str, Any]] = [
        {
            "id": i.digest.hex,
            "ref": str(i.digest),
            "size": i.size,
            "mtime": format_time(datetime.fromtimestamp(i.mtime, UTC)),
        }
        for i in infos
    ]
    if json_output:
        print_json(rows)
    else:
        OUTPUT.table(["object", "size", "modified"], [(r["ref"], human_bytes(r["size"]), r["mtime"]) for r in rows])
