"""``labvault models ...`` (register, list, versions, show, archive) and ``labvault get``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from labvault.cli import model_aliases
from labvault.cli.context import open_vault
from labvault.cli.lean_views import (
    model_version_doc,
    print_model,
    print_model_version,
    print_models,
    print_versions,
    version_json,
)
from labvault.cli.remotes import fetching
from labvault.cli.render import OUTPUT, human_bytes, print_json

if TYPE_CHECKING:
    pass

__all__ = ["app", "get", "version_json"]

app = typer.Typer(
    help="The model registry: immutable versions, aliases moved under a policy, rollback.",
    no_args_is_help=True,
)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("register")
def register(
    name: str = typer.Argument(..., help="PROJECT/MODEL to register a version of."),
    path: Path | None = typer.Argument(None, help="The model's folder (or single file)."),
    from_run: str | None = typer.Option(None, "--from", help="The run that produced the model: run:ID."),
    artifact: str | None = typer.Option(None, "--artifact", help="With --from and no PATH: the run's artifact."),
    version: str | None = typer.Option(None, "--version", help="The version, X.Y.Z (default: next patch)."),
    bump: str | None = typer.Option(None, "--bump", help="major, minor or patch: bump the highest version."),
    message: str | None = typer.Option(None, "--message", "-m", help="A note stored with the version."),
    allow_modified: bool = typer.Option(
        False, "--allow-modified", help="Register PATH even if it differs from what the run recorded."
    ),
    follow_links: bool = typer.Option(
        False, "--follow-links", help="Store what links pointing outside PATH point at (default: refuse them)."
    ),
    json_output: bool = JSON,
) -> None:
    """Register an immutable version: 0.1.0 first, then the next patch unless --version/--bump say.

    Without --version/--bump, a model whose whole version tree (files and source run) is the highest
    live version's prints that version and exits 0. Identical content under an existing version is a
    no-op; different content is exit 4.
    """
    with open_vault() as vault:
        found, created = vault.registry.register(
            name,
            path,
            run=from_run,
            artifact=artifact,
            version=version,
            bump=bump,
            message=message,
            allow_modified=allow_modified,
            follow_links=follow_links,
        )
    if json_output:
        print_json({**version_json(found), "created": created})
        return
    if created:
        OUTPUT.line(f"registered {found.ref}  ({found.files} files, {human_bytes(found.size)}, {found.content})")
    else:
        OUTPUT.line(f"{found.ref} already holds this content; nothing to do")
    for note in found.notes:
        OUTPUT.info(f"note: {note}")


@app.command("list")
def list_models(json_output: bool = JSON) -> None:
    """List registered models with their latest version and aliases."""
    with open_vault() as vault:
        models = vault.registry.models()
    print_models(models, json_output=json_output)


@app.command("versions")
def versions(
    name: str = typer.Argument(..., help="PROJECT/MODEL."),
    include_archived: bool = typer.Option(False, "--all", help="Include archived versions."),
    json_output: bool = JSON,
) -> None:
    """List a model's versions, oldest first."""

    with open_vault() as vault:
        found = vault.registry.versions(name, include_archived=include_archived)
    print_versions(found, json_output=json_output)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="PROJECT/MODEL, or PROJECT/MODEL@VERSION|ALIAS."),
    json_output: bool = JSON,
) -> None:
    """Show a model (versions, aliases) or one version (files, metrics, source, notes)."""
    from labvault.errors import ValidationError
    from labvault.refs import ModelRef, parse_ref

    parsed = parse_ref(ref, expect=ModelRef)
    if not isinstance(parsed, ModelRef):  # parse_ref refused the other forms already; this narrows the type
        raise ValidationError(f"expected PROJECT/MODEL[@VERSION|ALIAS], got {ref!r}")
    with open_vault() as vault:
        if parsed.version is None:
            found = vault.registry.versions(parsed.name, include_archived=True)
            print_model(parsed.name, vault.registry.aliases(parsed.name), found, json_output=json_output)
        elif getattr(vault, "is_server", False):  # the files and metrics.json come from the server's objects
            version, files, metrics = getattr(vault.registry, "show_version")(ref)  # noqa: B009 - ServerRegistry
            file_list = [{"path": f.path, "sha256": str(f.digest), "size": f.size} for f in files]
            print_model_version(
                {**version_json(version), "metrics": metrics, "file_list": file_list}, json_output=json_output
            )
        else:
            doc = model_version_doc(vault, vault.registry.resolve(ref))
            print_model_version(doc, json_output=json_output)


@app.command("archive")
def archive(
    ref: str = typer.Argument(..., help="PROJECT/MODEL@VERSION to archive."),
    message: str | None = typer.Option(None, "--message", "-m", help="Why (stored in the audit log)."),
    json_output: bool = JSON,
) -> None:
    """Hide a version from listings and alias moves; its content is kept."""
    with open_vault() as vault:
        found, changed = vault.registry.archive(ref, reason=message)
    if json_output:
        print_json({**version_json(found), "changed": changed})
    else:
        OUTPUT.line(f"archived {found.ref}" if changed else f"{found.ref} was already archived")


def get(
    ref: str = typer.Argument(
        ..., help="PROJECT/MODEL@VERSION, PROJECT/MODEL@ALIAS, or a snapshot data:NAME@vN (data:NAME: the latest)."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Folder to write DIR/PROJECT/MODEL/VERSION/ (DIR/NAME/vN/ for data) in."
    ),
    flat: bool = typer.Option(False, "--flat", help="Write the files straight into the -o folder."),
    json_output: bool = JSON,
) -> None:
    """Write a registered version's verified files to DIR/PROJECT/MODEL/VERSION/ (an alias resolved),
    or a data snapshot's to DIR/NAME/vN/.

    Files already there with the same content are kept; a different file in the way is exit 4 and
    nothing is written.
    """
    if ref.strip().startswith("data:"):
        _get_snapshot(ref.strip(), output, flat=flat, json_output=json_output)
        return
    with open_vault() as vault:
        if getattr(vault, "is_server", False):  # the server is the source: nothing to fetch from a remote
            found, target = vault.registry.materialize(ref, output, flat=flat)
        else:
            found, target = fetching(vault, [ref], lambda: vault.registry.materialize(ref, output, flat=flat))
    if json_output:
        print_json({**version_json(found), "path": str(target)})
    else:
        OUTPUT.line(str(target))


def _get_snapshot(ref: str, output: Path, *, flat: bool, json_output: bool) -> None:
    """``get data:NAME@vN``: the snapshot's tree written out as a model version's is (verified, no
    lock file touched, a different file in the way refused before anything is written)."""
    from labvault.services.registry.layout import write_version

    with open_vault() as vault:

        def write() -> tuple[Any, Path]:
            snapshot = vault.data.resolve(ref)
            rel = "." if flat else f"{snapshot.name}/v{snapshot.version}"
            if getattr(vault, "is_server", False):  # fetched in batches, not one request per file
                served: Any = vault.data
                return snapshot, served.write_tree(snapshot, output, rel)
            return snapshot, write_version(vault.objects, snapshot.content_hash, output, rel)

        # Through a server the objects come from it (verified, cached); a local vault fetches what
        # it lacks from its default remote first, as `get` of a model does.
        snapshot, target = write() if getattr(vault, "is_server", False) else fetching(vault, [ref], write)
    if json_output:
        print_json({**snapshot.to_json(), "path": str(target)})
    else:
        OUTPUT.line(str(target))


app.command("get")(get)
model_aliases.register(app)
