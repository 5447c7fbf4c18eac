"""``labvault reproduce REF``: rerun a past run on a clean workspace and prove its result matches."""

from __future__ import annotations

from pathlib import Path

import typer

from labvault.cli.context import open_vault
from labvault.cli.render import OUTPUT, print_json

__all__ = ["reproduce_cmd"]


def reproduce_cmd(
    ref: str = typer.Argument(
        ...,
        help="run:<id>, an id or prefix, or a model version (project/model@1.2.0 or @alias; @1.2.0 or @alias "
        "alone for the default project's only model).",
    ),
    env: str = typer.Option(
        "auto",
        "--env",
        help="current: this environment; rebuild: a uv venv of the recorded Python and pins; auto: current when "
        "Python major.minor and every package match the record, else rebuild.",
    ),
    rtol: float | None = typer.Option(None, "--rtol", help="Relative tolerance for every metric (default 0)."),
    atol: float | None = typer.Option(None, "--atol", help="Absolute tolerance for every metric (default 0)."),
    ignore_metric: list[str] = typer.Option([], "--ignore-metric", help="A metric not to compare (repeatable)."),
    ignore_artifact: list[str] = typer.Option([], "--ignore-artifact", help="An artifact not to compare (repeatable)."),
    twice: bool = typer.Option(False, "--twice", help="Rerun twice, to tell nondeterminism from other causes."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Build the workspace here (outside the project)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the workspace afterwards and print where it is."),
    report: Path | None = typer.Option(
        None, "--report", help="Also write the report to FILE (JSON when FILE ends in .json, else Markdown)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the report as one JSON document on stdout."),
) -> None:
    """Rerun a past run from its record and compare artifacts (sha256) and final metrics.

    The code is a clone of the recorded commit with the recorded patch; data inputs are checked out
    from their snapshots at the paths they had; config is restored byte for byte; seeds and thread
    counts are set as recorded. The rerun is a new run tagged `reproduces: run:ID`. Your checkout is
    never touched.

    Exit codes: 0 reproduced; 1 not reproduced; 3 a commit or snapshot is gone; 5 an object is
    missing or corrupt; 7 the recorded Python or a package cannot be had; 2 bad usage; 4 the run
    is still running.
    """
    import json

    from labvault.services.reproduce import render_markdown, report_json
    from labvault.services.reproduce.files import write_whole

    with open_vault() as vault:
        result = vault.reproduce(
            ref,
            env=env,
            rtol=rtol,
            atol=atol,
            ignore_metrics=ignore_metric,
            ignore_artifacts=ignore_artifact,
            twice=twice,
            workdir=workdir,
            keep=keep,
        )
    doc = report_json(result)
    if report is not None:
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n" if report.suffix == ".json" else render_markdown(result)
        write_whole(report.expanduser(), text)
    if json_output:
        print_json(doc)
    else:
        OUTPUT.line(render_markdown(result).rstrip("\n"))
    if result.missing:
        shown = "; ".join(result.missing[:5]) + (
            f" and {len(result.missing) - 5} more" if len(result.missing) > 5 else ""
        )
        OUTPUT.info(f"error: cannot reproduce {result.original}: {shown}")
        OUTPUT.info("hint: the report lists everything missing; restore it (git fetch, labvault pull), then retry")
    if result.workdir:
        OUTPUT.info(f"workspace kept in {result.workdir}")
    raise typer.Exit(result.exit_code)
