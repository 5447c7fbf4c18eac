"""init, version, fsck, gc."""

from __future__ import annotations

from pathlib import Path

import typer

from labvault.cli.context import open_local_vault
from labvault.cli.render import OUTPUT, human_bytes, print_json, progress
from labvault.errors import CheckFailed

__all__ = ["register"]

JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


def init(
    path: Path | None = typer.Argument(None, help="Project root (default: the current folder)."),
    db: str | None = typer.Option(
        None,
        "--db",
        help="Database URL (postgresql://user@host/db); default: an embedded SQLite file. No password in it: "
        "set PGPASSWORD or use ~/.pgpass.",
    ),
    objects: str | None = typer.Option(
        None,
        "--objects",
        help="Object store of a team vault: s3://bucket/prefix, file:///folder or a folder path (gs://, az:// "
        "through fsspec). No keys in it: credentials come from the environment (AWS_ACCESS_KEY_ID, ...).",
    ),
    cache_size: str | None = typer.Option(
        None, "--cache-size", help="Bound of the local cache of a remote object store (default 10GiB)."
    ),
    join: bool = typer.Option(
        False, "--join", help="Take --db, --objects and --cache-size from the vault: section of labvault.yaml."
    ),
    json_output: bool = JSON,
) -> None:
    """Make a vault in PATH/.labvault and add it to .gitignore; a no-op on an existing vault.

    With --db and --objects, the vault's metadata and objects live in PostgreSQL and object storage:
    run the same line (or `labvault init --join`) on every machine of the team (docs/team.md).
    """
    from labvault.client.settings import server_target
    from labvault.config import parse_size, read_join_settings
    from labvault.errors import ValidationError
    from labvault.vault import Vault

    target = server_target()
    if target is not None:  # a vault is made where its stores are, never through a server
        from labvault.client.vault import server_only

        server_only("init", target.url)

    size = parse_size(cache_size) if cache_size is not None else None
    if join:
        if db or objects or cache_size:
            raise ValidationError(
                "--join takes the settings from labvault.yaml; give no --db, --objects or --cache-size with it",
                hint="labvault init --join",
            )
        settings = read_join_settings((path or Path.cwd()).expanduser().resolve())
        db, objects, size = settings.database_url, settings.objects_url, settings.cache_size
    vault, created = Vault.init(path, database_url=db, objects_url=objects, cache_size=size)
    with vault:
        if json_output:
            print_json({"created": created, "path": str(vault.dir), "root": str(vault.root)})
        elif created:
            kind = "a team vault" if vault.config.is_team else "an empty labvault vault"
            OUTPUT.line(f"Initialised {kind} in {vault.dir}")
        else:
            OUTPUT.line(f"{vault.dir} is already a vault")


def version(json_output: bool = JSON) -> None:
    """Print labvault's version."""
    from labvault.cli.entry import show_version

    show_version(json_output=json_output)


def fsck(json_output: bool = JSON) -> None:
    """Re-hash every object, read every pack's framing, and check that every object the metadata refers to is present.

    Corrupt objects are moved to the quarantine folder and never served again. Temp files that
    killed writers left, and the files in the quarantine folder, are counted (`gc` and
    `gc --quarantine` remove them). Exits 1 if anything is corrupt or missing,
    or a pack is damaged.
    """
    with open_local_vault("fsck") as vault, progress("checking objects", None) as advance:
        report = vault.maintenance.fsck(progress=advance)
        owners = vault.maintenance.owners_of_each(list(report.missing))
    if json_output:
        print_json(
            {
                "clean": report.clean,
                "checked": report.checked,
                "bytes_checked": report.bytes_checked,
                "corrupt": [{"id": d.hex, "ref": str(d)} for d in report.corrupt],
                "missing": [
                    {"id": d.hex, "ref": str(d), "referenced_by": owners.get(d.hex, [])} for d in report.missing
                ],
                "quarantined": [str(d) for d in report.quarantined],
                "problems": list(report.problems),
                "stale_temp_files": {"count": report.stale_temp_files, "bytes": report.stale_temp_bytes},
                "quarantine": {"count": report.quarantine_files, "bytes": report.quarantine_bytes},
            }
        )
    else:
        for d in report.corrupt:
            OUTPUT.line(f"corrupt  {d} (moved to quarantine)")
        for d in report.missing:
            who = ", ".join(owners.get(d.hex, [])) or "a tree"
            OUTPUT.line(f"missing  {d} (referenced by {who})")
        for p in report.problems:
            OUTPUT.line(f"problem  {p}")
        if report.stale_temp_files:
            OUTPUT.line(
                f"note     {report.stale_temp_files} temp files of killed writers "
                f"({human_bytes(report.stale_temp_bytes)}) in tmp/; `labvault gc` removes them"
            )
        if report.quarantine_files:
            OUTPUT.line(
                f"note     {report.quarantine_files} files ({human_bytes(report.quarantine_bytes)}) in quarantine/; "
                "`labvault gc --quarantine` removes those older than its grace period"
            )
        OUTPUT.info(
            f"checked {report.checked} objects ({human_bytes(report.bytes_checked)}): "
            + ("no problems" if report.clean else f"{len(report.corrupt)} corrupt, {len(report.missing)} missing")
        )
    if not report.clean:
        raise CheckFailed(
            f"fsck found {len(report.corrupt)} corrupt and {len(report.missing)} missing objects",
            hint="restore .labvault/objects from a backup, or put the original files back "
            "(`labvault object put FILE`: the same bytes restore the same object)",
        )


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only report what would be deleted."),
    grace: str = typer.Option(
        "14d", "--grace", help="Keep unreferenced objects younger than this (e.g. 0, 30m, 12h, 14d)."
    ),
    quarantine: bool = typer.Option(
        False, "--quarantine", help="Also remove files set aside in the quarantine folder longer ago than --grace."
    ),
    json_output: bool = JSON,
) -> None:
    """Delete objects that nothing refers to and that are older than the grace period.

    Also removes temp files no live writer holds, and rewrites packs that are mostly dead space or
    damaged. With --quarantine, also removes quarantined files (corrupt objects and damaged pack
    bytes set aside) older than the grace period; keep them while you may still want to inspect them.
    """
    from labvault.services.maintenance import parse_duration

    seconds = parse_duration(grace)
    with open_local_vault("gc") as vault:
        report = vault.maintenance.gc(grace=seconds, dry_run=dry_run, quarantine=quarantine)
    if json_output:
        print_json(
            {
                "dry_run": report.dry_run,
                "deleted": [str(d) for d in report.deleted],
                "bytes_freed": report.bytes_freed,
                "kept_referenced": report.kept_referenced,
                "kept_young": report.kept_young,
                "temp_files_removed": report.temp_files_removed,
                "pack_bytes_reclaimed": report.pack_bytes_reclaimed,
                "quarantine_removed": {"count": report.quarantine_removed, "bytes": report.quarantine_bytes_removed},
            }
        )
        return
    verb = "would delete" if dry_run else "deleted"
    if OUTPUT.verbose:
        for d in report.deleted:
            OUTPUT.line(f"{verb} {d}")
    OUTPUT.line(
        f"{verb} {len(report.deleted)} objects ({human_bytes(report.bytes_freed)}); kept "
        f"{report.kept_referenced} referenced and {report.kept_young} younger than {grace}"
    )
    if quarantine:
        OUTPUT.line(
            f"{'would remove' if dry_run else 'removed'} {report.quarantine_removed} quarantined files "
            f"({human_bytes(report.quarantine_bytes_removed)}) older than {grace}"
        )


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(version)
    app.command()(fsck)
    app.command()(gc)
