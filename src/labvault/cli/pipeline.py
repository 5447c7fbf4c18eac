"""``labvault pipeline``: stages from labvault.yaml with a content-keyed cache that explains itself."""

from __future__ import annotations

import importlib
import importlib.util
import json
from typing import Any

import typer

from labvault.cli.context import open_project_vault
from labvault.cli.pipeline_views import run_command, status_command
from labvault.cli.render import OUTPUT, print_json

__all__ = ["app"]

app = typer.Typer(
    help="Pipelines: stages in labvault.yaml, run when their inputs change, restored from the cache otherwise.",
    no_args_is_help=True,
)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")
STAGES = typer.Argument(None, help="Stages (matrix stages as NAME@VALUE); default: all.", show_default=False)


@app.command("run")
def run_cmd(
    stages: list[str] = STAGES,
    force: bool = typer.Option(False, "--force", "-f", help="Run the named stages (default: all) even if up to date."),
    downstream: bool = typer.Option(False, "--downstream", help="Also run the stages that depend on the named ones."),
    jobs: int | None = typer.Option(None, "--jobs", "-j", help="Stages run at once (default: the number of cores)."),
    executor: str = typer.Option("local", "--executor", help="local, or dask://HOST:PORT for a Dask cluster."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would run or be restored, and why; change nothing."
    ),
    keep_going: bool = typer.Option(False, "--keep-going", "-k", help="After a failure, finish unrelated stages."),
    ignore_env: bool = typer.Option(False, "--ignore-env", help="Leave the environment out of every stage key."),
    json_output: bool = JSON,
) -> None:
    """Bring the pipeline up to date: run what changed, restore what was computed before, skip the rest."""
    run_command(
        list(stages or []),
        force=force,
        downstream=downstream,
        jobs=jobs,
        executor=executor,
        dry_run=dry_run,
        keep_going=keep_going,
        ignore_env=ignore_env,
        json_output=json_output,
    )


@app.command("status")
def status_cmd(
    stages: list[str] = STAGES,
    downstream: bool = typer.Option(False, "--downstream", help="The named stages and those that depend on them."),
    ignore_env: bool = typer.Option(False, "--ignore-env", help="Leave the environment out of every stage key."),
    json_output: bool = JSON,
) -> None:
    """For each stage: up to date, will restore from cache, or will run, and why (old -> new values)."""
    status_command(list(stages or []), json_output=json_output, downstream=downstream, ignore_env=ignore_env)


@app.command("checkout")
def checkout_cmd(stages: list[str] = STAGES, json_output: bool = JSON) -> None:
    """Restore every stage's outputs recorded in labvault.lock from the object store, verified."""
    with open_project_vault("pipeline checkout") as vault:
        written = vault.pipelines.checkout(list(stages or []))
    if json_output:
        print_json([{"stage": k, "files_written": v} for k, v in written.items()])
        return
    total = sum(written.values())
    OUTPUT.line(f"{total} files restored for {sum(1 for v in written.values() if v)} of {len(written)} stages")


@app.command("dag")
def dag_cmd(
    mermaid: bool = typer.Option(False, "--mermaid", help="A Mermaid flowchart."),
    dot: bool = typer.Option(False, "--dot", help="A Graphviz dot graph."),
    json_output: bool = JSON,
) -> None:
    """The stage graph (outputs -> deps)."""
    with open_project_vault("pipeline dag") as vault:
        graph = vault.pipelines.dag()
    if json_output:
        print_json(graph)
    elif mermaid:
        OUTPUT.line("flowchart TD")
        ids = {name: f"s{i}" for i, name in enumerate(graph["stages"])}
        for name, ident in ids.items():
            OUTPUT.line(f'    {ident}["{name}"]')
        for up, down in graph["edges"]:
            OUTPUT.line(f"    {ids[up]} --> {ids[down]}")
    elif dot:
        OUTPUT.line("digraph pipeline {")
        for name in graph["stages"]:
            OUTPUT.line(f'    "{name}";')
        for up, down in graph["edges"]:
            OUTPUT.line(f'    "{up}" -> "{down}";')
        OUTPUT.line("}")
    else:
        ups: dict[str, list[str]] = {n: [] for n in graph["stages"]}
        for up, down in graph["edges"]:
            ups[down].append(up)
        for name in graph["stages"]:
            OUTPUT.line(f"{name}" + (f"  <- {', '.join(ups[name])}" if ups[name] else ""))


@app.command("show")
def show_cmd(stage: str = typer.Argument(..., help="A stage (NAME or NAME@VALUE)."), json_output: bool = JSON) -> None:
    """A stage: its command, deps, params, outputs, current key and state, and its last run."""
    with open_project_vault("pipeline show") as vault:
        doc = vault.pipelines.show(stage)
    if json_output:
        print_json(doc)
        return
    OUTPUT.line(f"stage    {doc['stage']}")
    OUTPUT.line(f"cmd      {doc['cmd']}")
    if doc["wdir"] != ".":
        OUTPUT.line(f"wdir     {doc['wdir']}")
    for label in ("deps", "outs", "metrics", "upstream"):
        if doc[label]:
            OUTPUT.line(f"{label:<9}{', '.join(doc[label])}")
    for k, v in doc["params"].items():
        OUTPUT.line(f"param    {k} = {json.dumps(v, default=str)}")
    OUTPUT.line(f"key      {doc['key'] or 'not known yet (an upstream stage will run)'}")
    OUTPUT.line(f"state    {doc['state']}" + (f": {'; '.join(doc['reasons'])}" if doc["reasons"] else ""))
    last = doc["last"]
    if last:
        for path, digest in last["outs"].items():
            OUTPUT.line(f"last out {path}  {digest}")


@app.command("tag")
def tag_cmd(
    name: str = typer.Argument(..., help="The tag name: pipeline:NAME."),
    message: str = typer.Option("", "--message", "-m", help="What this version is."),
    json_output: bool = JSON,
) -> None:
    """Name this pipeline version (labvault.yaml + labvault.lock + commit), immutably: pipeline:NAME."""
    with open_project_vault("pipeline tag") as vault:
        doc = vault.pipelines.tag(name, message=message)
    if json_output:
        print_json(doc)
    else:
        OUTPUT.line(f"{doc['ref']}  lock {doc['lock'][:19]}…  commit {(doc['commit'] or 'none')[:12]}")


@app.command("log")
def log_cmd(json_output: bool = JSON) -> None:
    """Pipeline tags and pipeline runs, newest first."""
    with open_project_vault("pipeline log") as vault:
        doc = vault.pipelines.log()
    if json_output:
        print_json([*({"kind": "tag", **t} for t in doc["tags"]), *({"kind": "run", **r} for r in doc["runs"])])
        return
    for t in doc["tags"]:
        OUTPUT.line(f"{t['ref']}  {t['created_at']}  {t['message']}")
    for r in doc["runs"]:
        version = ", ".join(r["versions"]) or (f"definition {r['definition'][:19]}…" if r["definition"] else "")
        OUTPUT.line(f"{r['ref']}  {r['started_at']}  {r['status']}" + (f"  {version}" if version else ""))


def register(root: Any) -> None:
    """Add ``labvault pipeline`` to the root app, with ``pipeline import`` when its module is present."""
    if importlib.util.find_spec("labvault.cli.pipeline_import") is not None:
        importlib.import_module("labvault.cli.pipeline_import").register(app)
    root.add_typer(app, name="pipeline")
