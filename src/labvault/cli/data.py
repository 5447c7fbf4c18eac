"""``labvault data``: immutable, checksummed dataset snapshots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from labvault.cli.context import open_vault
from labvault.cli.data_add import run_add
from labvault.cli.data_status import run_status
from labvault.cli.lean_views import print_manifest
from labvault.cli.remotes import fetching, report_checkout
from labvault.cli.render import OUTPUT, human_bytes, print_json, progress, readable_number

__all__ = ["app"]

app = typer.Typer(
    help="Data snapshots: immutable, checksummed dataset versions data:NAME@vN, pinned in labvault.lock.",
    no_args_is_help=True,
)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")
REF_HELP = "A snapshot: data:NAME@vN (data:NAME or NAME for the latest)."


def _ref(text: str) -> str:
    """Accept ``NAME`` and ``NAME@vN`` as well as ``data:NAME@vN``."""
    return text if text.startswith(("data:", "sha256:", "run:")) or "/" in text else f"data:{text}"


def _summary(s: Any) -> list[Any]:
    records = "" if s.record_count is None else s.record_count
    return [
        s.ref,
        s.file_count,
        human_bytes(s.total_bytes),
        records,
        s.created_at.strftime("%Y-%m-%d %H:%M"),
        s.message,
    ]


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Dataset name (letters, digits, '.', '_', '-')."),
    path: Path = typer.Argument(..., help="The file or folder to snapshot (a symlink argument is resolved)."),
    message: str = typer.Option("", "--message", "-m", help="Why this version exists."),
    no_gitignore: bool = typer.Option(
        False, "--no-gitignore", help="Do not add PATH to the project's .gitignore (it is added by default)."
    ),
    json_output: bool = JSON,
) -> None:
    """Snapshot PATH as the next version data:NAME@vN and pin it in labvault.lock.

    Identical content to the latest version prints the existing reference and exits 0. PATH gets
    an anchored line in the project root's .gitignore (git need not store what the lock file pins);
    if git already tracks it, a warning says how to stop tracking it.
    """
    run_add(name, str(path), message=message, json_output=json_output, gitignore=not no_gitignore)


@app.command("import")
def import_(
    name: str = typer.Argument(..., help="Dataset name."),
    url: str = typer.Argument(..., help="http(s)://, s3://, gs:// URL or a local path, file or folder."),
    message: str = typer.Option("", "--message", "-m", help="Why this version exists."),
    json_output: bool = JSON,
) -> None:
    """Snapshot data from outside the project, recording the source URL and its version or ETag."""
    with open_vault() as vault, progress(f"importing {url}", None) as advance:
        snapshot, created = vault.data.import_(name, url, message=message, progress=advance)
    if json_output:
        print_json({**snapshot.to_json(), "created": created})
        return
    OUTPUT.line(f"{snapshot.ref}  {snapshot.content_hash}")
    OUTPUT.info(
        f"{snapshot.file_count} files, {human_bytes(snapshot.total_bytes)} from {snapshot.source_url}"
        if created
        else f"no change since {snapshot.ref}"
    )


@app.command("list")
def list_(json_output: bool = JSON) -> None:
    """Every dataset with its latest version."""
    with open_vault() as vault:
        rows = vault.data.datasets()
    if json_output:
        print_json([{**s.to_json(), "versions": n} for s, n in rows])
        return
    OUTPUT.table(
        ["dataset", "latest", "versions", "files", "size", "records", "created"],
        [[s.name, s.ref, n, *_summary(s)[1:5]] for s, n in rows],
    )


@app.command("log")
def log(name: str = typer.Argument(..., help="Dataset name."), json_output: bool = JSON) -> None:
    """Every version of a dataset, newest first."""
    with open_vault() as vault:
        versions = vault.data.log(name.removeprefix("data:"))
    if json_output:
        print_json([s.to_json() for s in versions])
        return
    OUTPUT.table(
        ["version", "content", "files", "size", "records", "created", "by", "message"],
        [[s.ref, s.content_hash.short, *_summary(s)[1:5], s.created_by, s.message] for s in versions],
    )


@app.command("show")
def show(ref: str = typer.Argument(..., help=REF_HELP), json_output: bool = JSON) -> None:
    """The manifest: summary keys and every file with its sha256, size, record count and schema."""
    with open_vault() as vault:
        manifest = vault.data.get(_ref(ref))
    print_manifest(manifest, json_output=json_output)


@app.command("manifest")
def manifest(
    ref: str = typer.Argument(..., help=REF_HELP),
    output: str = typer.Option("data_manifest.json", "--output", "-o", help="File to write ('-' for stdout)."),
) -> None:
    """Export the manifest as stable, sorted JSON (data_manifest.json by default), to keep in git."""
    with open_vault() as vault:
        doc = vault.data.get(_ref(ref)).to_json()
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        if output == "-":
            print_json(doc)
            return
        writer: Any = vault.data if getattr(vault, "is_server", False) else vault
        writer.write_output(output, text)
    OUTPUT.info(f"wrote {output}")


@app.command("ls")
def ls(
    ref: str = typer.Argument(..., help=REF_HELP),
    subpath: str | None = typer.Argument(None, help="A folder inside the snapshot (default: its root)."),
    json_output: bool = JSON,
) -> None:
    """The files, folders and links directly inside a snapshot's folder."""
    with open_vault() as vault:
        entries = vault.data.ls(_ref(ref), subpath)
    if json_output:
        print_json(entries)
        return
    OUTPUT.table(
        ["path", "type", "size", "sha256 / target"],
        [
            [
                f"{e['path']}{'/' if e['type'] == 'dir' else ''}",
                e["type"],
                e.get("size", ""),
                str(e.get("sha256", e.get("target", "")))[:19],
            ]
            for e in entries
        ],
    )


@app.command("status")
def status(
    name: str | None = typer.Argument(None, help="Only this dataset (or give a PATH here)."),
    path: str | None = typer.Argument(None, help="Only the dataset at this path."),
    json_output: bool = JSON,
) -> None:
    """What changed in the working copy since the snapshot labvault.lock names (exit 0 either way)."""
    run_status(name, path, json_output=json_output)


@app.command("checkout")
def checkout(
    ref: str | None = typer.Argument(None, help=REF_HELP + " Omit to restore everything labvault.lock names."),
    path: Path | None = typer.Argument(None, help="Where to restore it (default: where it was added from)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite local modifications."),
    json_output: bool = JSON,
) -> None:
    """Restore a snapshot's exact, verified bytes; refuses to overwrite local modifications."""

    def run() -> list[Any]:
        with progress("checking out", None) as advance:
            return vault.data.checkout(_ref(ref) if ref else None, path, force=force, progress=advance, fetch=False)

    with open_vault() as vault:
        # Through a server there is no remote to fetch from: the server is where the objects are.
        results = run() if getattr(vault, "is_server", False) else fetching(vault, [_ref(ref)] if ref else [], run)
    if json_output:
        print_json([r.to_json() for r in results])
        return
    report_checkout(results)


@app.command("diff")
def diff(
    a: str = typer.Argument(..., help="The older snapshot, data:NAME@vN."),
    b: str = typer.Argument(..., help="The newer snapshot, data:NAME@vM."),
    json_output: bool = JSON,
) -> None:
    """Files added/removed/modified, and for tabular files schema, record-count and column drift (PSI)."""
    from labvault.services.snapshots.diff import diff_verdict

    with open_vault() as vault:
        result = vault.data.diff(_ref(a), _ref(b))
    verdict = diff_verdict(result)
    if json_output:
        print_json({**result.to_json(), "verdict": verdict.to_json()})
        return
    OUTPUT.line(
        f"{result.a} -> {result.b}: {len(result.added)} added, {len(result.removed)} removed, "
        f"{len(result.modified)} modified"
    )
    for label, paths in (("added", result.added), ("removed", result.removed), ("modified", result.modified)):
        for p in paths:
            OUTPUT.line(f"  {label:<9}{p}")
    for t in result.tabular:
        OUTPUT.line(
            f"{t.path}: records {t.record_count_before} -> {t.record_count_after}"
            + (f"; columns added {list(t.columns_added)}" if t.columns_added else "")
            + (f"; removed {list(t.columns_removed)}" if t.columns_removed else "")
            + (f"; retyped {[f'{c}:{x}->{y}' for c, x, y in t.columns_retyped]}" if t.columns_retyped else "")
        )
        OUTPUT.table(
            ["column", "kind", "psi", "before", "after", "values"],
            [
                [
                    c.column,
                    c.kind,
                    "" if c.psi is None else f"{c.psi:.4f}",
                    _brief(c.before),
                    _brief(c.after),
                    _values(c.new_values, c.vanished_values),
                ]
                for c in t.columns
            ],
        )
    OUTPUT.line(f"verdict: {_verdict_text(verdict)}")


def _verdict_text(verdict: Any) -> str:
    if verdict.status == "schema changed":
        return f"schema changed ({', '.join(verdict.schema)})"
    if verdict.status == "drift":
        n = len(verdict.drifted_columns)
        return (
            f"drift in {n} column{'s' if n != 1 else ''} above PSI {verdict.psi_threshold} "
            f"({', '.join(verdict.drifted_columns)}; max PSI {verdict.max_psi:.4f})"
        )
    if verdict.status == "no drift" and verdict.max_psi is not None:
        return f"no drift (max PSI {verdict.max_psi:.4f}, at most {verdict.psi_threshold})"
    if verdict.status == "no drift":
        return "no drift (no numeric column of a tabular file changed)"
    return str(verdict.status)


def _values(new: tuple[str, ...], vanished: tuple[str, ...]) -> str:
    parts = ([f"new: {', '.join(new)}"] if new else []) + ([f"vanished: {', '.join(vanished)}"] if vanished else [])
    return "; ".join(parts)


def _brief(stats: dict[str, Any]) -> str:
    keys = ("count", "nulls", "mean", "std", "min", "max") if "mean" in stats else ("count", "null_rate", "distinct")
    return " ".join(f"{k}={_fmt(stats.get(k))}" for k in keys)


def _fmt(v: Any) -> str:
    return readable_number(v) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)
