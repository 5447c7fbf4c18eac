"""``labvault env show|diff|export``: a run's recorded environment."""

from __future__ import annotations

from pathlib import Path

import typer

from labvault.cli.context import open_vault
from labvault.cli.render import OUTPUT, print_json

__all__ = ["app"]

app = typer.Typer(help="Show, compare and export the environments runs recorded.", no_args_is_help=True)
RUN_ARG = typer.Argument(..., help="run:<id>, an id, or a unique prefix of 6+ hex digits.")
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("show")
def show(run: str = RUN_ARG, json_output: bool = JSON) -> None:
    """Python, OS, CPU, GPUs, container and every package a run's environment had."""
    with open_vault() as vault:
        doc = vault.environments.show(run)
    if json_output:
        print_json(doc)
        return
    for key in ("python", "os", "distribution", "cpu", "cpu_count", "memory", "gpus", "cuda", "container"):
        if doc.get(key) not in (None, [], {}):
            OUTPUT.line(f"{key}: {doc[key]}")
    OUTPUT.table(["package", "version"], [(p["name"], p["version"]) for p in doc["packages"]])


@app.command("diff")
def diff(
    run: str = RUN_ARG,
    other: str = typer.Argument("current", help="Another run, or `current` (this environment)."),
    json_output: bool = JSON,
) -> None:
    """Packages added, removed and changed, Python, OS, CPU, GPU and container: from RUN to OTHER."""
    with open_vault() as vault:
        doc = vault.environments.diff(run, other)
    if json_output:
        print_json(doc)
        return
    if doc["python"]:
        OUTPUT.line(f"python {doc['python'][0]} -> {doc['python'][1]}")
    for c in doc["changed"]:
        OUTPUT.line(f"~ {c['name']} {c['a']} -> {c['b']}")
    for p in doc["added"]:
        OUTPUT.line(f"+ {p}")
    for p in doc["removed"]:
        OUTPUT.line(f"- {p}")
    for key, (a, b) in doc["system"].items():
        OUTPUT.line(f"{key}: {a} -> {b}")
    if not (doc["python"] or doc["changed"] or doc["added"] or doc["removed"] or doc["system"]):
        OUTPUT.info("no difference")


@app.command("export")
def export(
    run: str = RUN_ARG,
    format: str = typer.Option("requirements", "--format", help="requirements | uv | conda | dockerfile"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to FILE instead of stdout."),
) -> None:
    """The recorded Python and package pins, as requirements.txt, a uv pyproject.toml, a conda
    environment.yml or a Dockerfile (FROM python:X.Y.Z-slim)."""
    with open_vault() as vault:
        text = vault.environments.export(run, format=format)
    if output is None:
        OUTPUT.line(text.rstrip("\n"))
        return
    from labvault.services.reproduce.files import write_whole

    write_whole(output.expanduser(), text)
