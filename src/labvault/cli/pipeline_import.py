"""``labvault pipeline import [dvc.yaml]``: DVC's stages written into ``labvault.yaml``."""

from __future__ import annotations

from pathlib import Path

import typer

from labvault.cli.render import OUTPUT, print_json

__all__ = ["register"]


def import_cmd(
    dvc_yaml: Path = typer.Argument(Path("dvc.yaml"), help="The dvc.yaml to translate (default: ./dvc.yaml)."),
    force: bool = typer.Option(False, "--force", help="Replace the stages labvault.yaml already has."),
    expand: bool = typer.Option(False, "--expand", help="Expand matrix stages into one stage per combination."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the stages: block; write nothing."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Translate a DVC pipeline (dvc.yaml) into labvault.yaml's stages: section.

    cmd, deps, params, outs, metrics, plots (as artifacts), wdir, frozen and always_changed carry
    over; vars and ${} are resolved, foreach is expanded, matrix is kept. Other sections of
    labvault.yaml are kept as written. Whatever has no labvault equivalent is listed, never dropped.
    """
    from labvault.services.pipelines.dvcimport import import_dvc, project_root, render_stages, write_stages

    root = project_root()
    imported = import_dvc(dvc_yaml, project_root=root, expand=expand)
    written = None
    if not dry_run:
        written = write_stages(root, imported, force=force, source=dvc_yaml.name)
    if json_output:
        print_json({"stages": imported.stages, "untranslated": imported.untranslated, "written": str(written or "")})
        return
    if dry_run:
        OUTPUT.line(render_stages(imported.stages).rstrip("\n"))
    else:
        OUTPUT.line(f"imported {len(imported.stages)} stage(s) from {dvc_yaml} into {written}")
    if imported.untranslated:
        OUTPUT.info(f"not translated ({len(imported.untranslated)}):")
        for note in imported.untranslated:
            OUTPUT.info(f"  - {note}")


def register(group: typer.Typer) -> None:
    """Add ``import`` to the ``pipeline`` command group."""
    group.command("import")(import_cmd)
