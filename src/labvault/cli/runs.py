"""``labvault run -- CMD`` and ``labvault runs list|show|compare|artifacts|export|delete|restore``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from labvault.cli.context import open_vault
from labvault.cli.lean_runs import history_json, print_run, run_duration, run_json
from labvault.cli.render import OUTPUT, print_json
from labvault.errors import ValidationError

if TYPE_CHECKING:
    pass

__all__ = ["app", "register"]

app = typer.Typer(help="Find, inspect, compare, export and delete tracked runs.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")
RUN_ARG = typer.Argument(..., help="run:<id>, an id, or a unique prefix of 6+ hex digits.")


def _short(value: float) -> str:
    return f"{value:.4g}"


def run_cmd(
    command: list[str] = typer.Argument(
        ..., help="The command and its arguments, after `--`.", metavar="-- CMD ARGS..."
    ),
    project: str | None = typer.Option(None, "--project", "-p", help="Project name (default: the project folder's)."),
    name: str | None = typer.Option(None, "--name", "-n", help="Run name (default: the script or command name)."),
    config: list[str] = typer.Option([], "--config", "-c", help="A config file to record byte for byte (repeatable)."),
    inputs: list[str] = typer.Option([], "--input", "-i", help="A data reference the run reads (repeatable)."),
    outputs: list[str] = typer.Option(
        [], "--output", "-o", help="A file or folder the command must produce; stored after it exits (repeatable)."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Export LABVAULT_SEED and PYTHONHASHSEED with this value and record it.", min=0
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors (before CMD: after it, CMD's own)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print more detail on stderr (before CMD)."),
) -> None:
    """Run CMD as a tracked run: capture code, environment and output; exit with CMD's exit code.

    Exit codes: CMD's own; 127 if CMD does not exist and 126 if it is not executable (the run is
    recorded as failed); 128+N if CMD was killed by signal N; 1 if CMD succeeded but a declared
    output is missing; 125 if labvault itself failed.
    """
    from labvault.services.tracking.wrapper import run_command

    OUTPUT.quiet = OUTPUT.quiet or quiet
    OUTPUT.verbose = OUTPUT.verbose or verbose
    with open_vault() as vault:
        result = run_command(
            vault.runs,
            command,
            vault_dir=None if getattr(vault, "is_server", False) else vault.dir,
            project=project,
            name=name,
            config=config,
            inputs=inputs,
            outputs=outputs,
            seed=seed,
        )
    run = result.run
    if result.exit_code in (125, 126, 127) and run.error:
        OUTPUT.info(f"error: {run.error}")
    for missing in result.missing_outputs:
        OUTPUT.info(f"error: declared output {missing} was not produced")
    OUTPUT.info(f"{run.ref} {run.status} (exit code {result.exit_code})")
    raise typer.Exit(result.exit_code)


@app.command("list")
def list_cmd(
    project: str | None = typer.Option(None, "--project", "-p", help="Only runs of this project."),
    filter_: str | None = typer.Option(
        None, "--filter", "-f", help='A filter, e.g. "metrics.auc > 0.9 and params.depth = 4" (docs/tracking.md).'
    ),
    sort: str | None = typer.Option(
        None, "--sort", "-s", help="Sort key: metrics.KEY, params.KEY, name, started...; '-' first for descending."
    ),
    limit: int | None = typer.Option(None, "--limit", "-l", help="At most this many runs.", min=0),
    deleted: bool = typer.Option(False, "--deleted", help="List deleted runs instead."),
    json_output: bool = JSON,
) -> None:
    """List runs, newest first; filter and sort them."""
    with open_vault() as vault:
        found = vault.runs.list(project=project, filter=filter_, sort=sort, limit=limit, deleted=deleted)
    if json_output:
        print_json([run_json(r) for r in found])
        return
    rows = []
    for r in found:
        metrics = ",".join(f"{k}={_short(v)}" for k, v in list(r.metrics.items())[:3])
        started = r.started_at.strftime("%m-%d %H:%M")
        rows.append((r.id, r.project, r.name, r.status, started, run_duration(r), metrics))
    OUTPUT.table(["id", "project", "name", "status", "started", "duration", "metrics"], rows)
    if not found:
        OUTPUT.info("no runs match")


@app.command("show")
def show(run: str = RUN_ARG, json_output: bool = JSON) -> None:
    """Show everything a run recorded, including metric histories."""
    with open_vault() as vault:
        doc = vault.runs.export(run)
        history = vault.runs.history(doc["id"])
        gone = vault.runs.process_gone(status=doc["status"], pid=doc.get("pid"), host=doc["host"])
        found = vault.runs.list(filter=f"tags.reproduces = '{doc['ref']}'", sort="started")
    reproductions = [{"ref": r.ref, "verdict": r.tags.get("reproduce_verdict")} for r in found]
    if json_output:
        print_json({**doc, "metric_history": history_json(history), "reproductions": reproductions})
        return
    print_run(doc, history, gone=gone, reproductions=reproductions)


@app.command("compare")
def compare(
    runs: list[str] = typer.Argument(..., help="Two or more runs (ids, prefixes or run:<id>)."),
    all_rows: bool = typer.Option(False, "--all", help="Show rows that are the same in every run too."),
    json_output: bool = JSON,
) -> None:
    """Params, metrics, inputs, artifacts (sha256), code and environment side by side; differences marked '*'."""
    if len(runs) < 2:
        raise ValidationError("compare needs at least two runs", hint="labvault runs compare RUN RUN [RUN...]")
    with open_vault() as vault:
        doc = vault.runs.compare(runs)
    if json_output:
        print_json(doc)
        return
    header = ["", "field", *(r["id"] for r in doc["runs"])]
    rows = []
    for section in ("attributes", "params", "metrics", "artifacts", "code", "environment"):
        for key, row in doc[section].items():
            if section == "environment" and key == "package_versions":
                for pkg, prow in row.items():
                    rows.append(("*", f"package {pkg}", *(_cell(v) for v in prow["values"])))
                continue
            # Artifacts always show: an identical model file is an answer too.
            if row["differs"] or all_rows or section == "artifacts":
                rows.append(("*" if row["differs"] else "", f"{section}.{key}", *(_cell(v) for v in row["values"])))
    OUTPUT.table(header, rows)
    if not rows:
        OUTPUT.info("the runs do not differ in params, metrics, inputs, artifacts, code or environment")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _short(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


@app.command("export")
def export(
    run: str = RUN_ARG,
    fmt: str = typer.Option("yaml", "--format", help="yaml (run.yaml) or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print a run as a self-contained run.yaml: code, data, config, seeds, environment, artifacts."""
    if fmt not in ("yaml", "json"):
        raise ValidationError(f"unknown format {fmt!r}", hint="use --format yaml or --format json")
    with open_vault() as vault:
        doc = vault.runs.export(run)
        if fmt == "json":
            import json

            text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"
        else:
            import yaml

            text = yaml.safe_dump(doc, sort_keys=True, allow_unicode=True, default_flow_style=False)
        if output is not None:
            vault.write_output(output, text)
    if output is None:
        OUTPUT.line(text.rstrip("\n"))
    else:
        OUTPUT.info(f"wrote {output}")


@app.command("artifacts")
def artifacts(
    run: str = RUN_ARG,
    name: str | None = typer.Argument(None, help="Only this artifact (default: every artifact of the run)."),
    dest: Path = typer.Option(Path("."), "--output", "-o", help="The folder to write them in (default: here)."),
    json_output: bool = JSON,
) -> None:
    """Download a run's artifacts, folders included, each file verified against its sha256.

    Files already there with the same content are kept; a different file in the way is exit 4 and
    nothing is written.
    """
    with open_vault() as vault:
        done = vault.runs.download_artifacts(run, dest, name=name)
    if json_output:
        print_json([f.to_json() for f in done])
        return
    for f in done:
        OUTPUT.line(f"{dest / f.path}  {f.sha256 if f.kind == 'file' else '-> ' + str(f.target)}")
    written = sum(f.written for f in done)
    OUTPUT.info(f"{written} written, {len(done) - written} already there")


@app.command("delete")
def delete(run: str = RUN_ARG, json_output: bool = JSON) -> None:
    """Soft-delete a run: hidden from listings; gc reclaims its objects after the grace period."""
    with open_vault() as vault:
        done = vault.runs.delete(run)
    if json_output:
        print_json(run_json(done))
    else:
        OUTPUT.line(f"deleted {done.ref} (restore it with `labvault runs restore {done.id}`)")


@app.command("restore")
def restore(run: str = RUN_ARG, json_output: bool = JSON) -> None:
    """Undo `runs delete`, unless gc already reclaimed the run's objects."""
    with open_vault() as vault:
        done = vault.runs.restore(run)
    if json_output:
        print_json(run_json(done))
    else:
        OUTPUT.line(f"restored {done.ref}")


def register(root: typer.Typer) -> None:
    # Options are parsed up to the command's first word (or `--`); everything from there on is the
    # command's own, so an unknown option before it is a usage error, not a command to run.
    root.command("run", context_settings={"allow_interspersed_args": False})(run_cmd)
    root.add_typer(app, name="runs")
