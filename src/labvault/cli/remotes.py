"""``labvault remote add|list|remove``, ``labvault push`` and ``labvault pull`` (docs/remotes.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer

from labvault.cli.context import open_here, open_local_vault
from labvault.cli.render import OUTPUT, human_bytes, print_json, progress
from labvault.errors import Conflict, IntegrityError, LabvaultError, NotFound, ValidationError

__all__ = ["app", "fetching", "register", "report_checkout", "transfer_progress"]

app = typer.Typer(
    help="Remotes: other vaults (a folder on a NAS or mounted disk, a team vault, a labvault server) to push to "
    "and pull from.",
    no_args_is_help=True,
)
T = TypeVar("T")
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")
REMOTE = typer.Option(None, "--remote", "-r", help="The remote's name (default: the default remote, or the only one).")
JOBS = typer.Option(4, "--jobs", "-j", help="Objects sent in parallel (1 to 64).")
NO_DATA = typer.Option(False, "--no-data", help="Leave out the snapshots that runs read.")
DRY_RUN = typer.Option(False, "--dry-run", "-n", help="Say what would move; move nothing.")
REFS = typer.Argument(
    None,
    help="data:NAME@vN, run:ID, PROJECT/MODEL@VERSION|ALIAS; none: the snapshots labvault.lock names.",
    show_default=False,
)


@contextmanager
def transfer_progress(description: str) -> Iterator[Any]:
    """A bar of objects and bytes on stderr when it is a terminal; else a no-op ``advance(done, total, nbytes)``."""
    if OUTPUT.quiet or not sys.stderr.isatty():
        yield lambda done, total, nbytes=0: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("objects, {task.fields[sent]}"),
        TimeRemainingColumn(),
        console=OUTPUT.err,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None, sent="0 B")

        def advance(done: int, total: int, nbytes: int = 0) -> None:
            bar.update(task, completed=done, total=total, sent=human_bytes(nbytes))

        yield advance


def _local_vault(what: str) -> Any:
    """This machine's vault: remotes, push and pull move between it and its remotes (a server remote
    through the server's API, as ``labvault.open()`` does). With LABVAULT_URI set they are refused
    (exit 2); a saved login alone does not redirect them (its token still serves a server remote of
    the same URL)."""
    import os

    from labvault.client.settings import ENV_URI

    if os.environ.get(ENV_URI):
        return open_local_vault(what)
    return open_here()


def fetching(vault: Any, refs: list[str], action: Callable[[], T]) -> T:
    """Run ``action`` (a checkout, a get) after fetching from the default remote the records and trees
    this vault lacks; an object found missing while it runs is fetched too, and ``action`` rerun once."""
    _fetch(vault, refs, blobs=False)
    try:
        return action()
    except (IntegrityError, NotFound) as exc:
        try:
            fetched = _fetch(vault, refs, blobs=True)
        except LabvaultError:
            raise exc from None
        if not fetched:
            raise
    return action()


def _fetch(vault: Any, refs: list[str], *, blobs: bool) -> int:
    with transfer_progress("fetching") as advance:
        fetched: int = vault.remotes.fetch(refs, blobs=blobs, progress=advance)
        return fetched


@app.command("add")
def add(
    name: str = typer.Argument(..., help="The remote's name (letters, digits, '.', '_', '-')."),
    location: str | None = typer.Argument(
        None,
        help="A folder (another vault's folder, made on the first push), a file:// URL, or a labvault server's "
        "http(s)://HOST[:PORT] (its token: LABVAULT_TOKEN or `labvault login URL`).",
    ),
    default: bool = typer.Option(False, "--default", help="Make it the remote push and pull use by default."),
    db: str | None = typer.Option(None, "--db", help="A team vault's database URL: postgresql://user@host/db."),
    objects: str | None = typer.Option(None, "--objects", help="A team vault's object store URL: s3://bucket/prefix."),
    json_output: bool = JSON,
) -> None:
    """Add a remote, kept in .labvault/config.json (never with credentials): a folder, a labvault
    server by its URL, or a team vault by --db and --objects (credentials come from the environment,
    as for `labvault init`)."""
    with _local_vault("remote add") as vault:
        spec = vault.remotes.add(name, location, database_url=db, objects_url=objects, default=default)
    if json_output:
        print_json(spec.to_json())
    else:
        OUTPUT.line(f"added remote {spec.name} -> {spec.url}" + (" (default)" if spec.default else ""))


@app.command("list")
def list_(json_output: bool = JSON) -> None:
    """List the remotes; the default one is marked."""
    with _local_vault("remote list") as vault:
        remotes = vault.remotes.list()
    if json_output:
        print_json([spec.to_json() for spec in remotes])
        return
    if not remotes:
        OUTPUT.info("no remotes (add one with `labvault remote add NAME PATH`)")
        return
    OUTPUT.table(
        ["name", "kind", "url", "default"], [[s.name, s.kind, s.url, "*" if s.default else ""] for s in remotes]
    )


@app.command("remove")
def remove(name: str = typer.Argument(..., help="The remote's name.")) -> None:
    """Forget a remote (its vault is left as it is)."""
    with _local_vault("remote remove") as vault:
        vault.remotes.remove(name)
    OUTPUT.line(f"removed remote {name}")


@app.command("status")
def status(
    name: str | None = typer.Argument(None, help="The remote's name (default: the default remote, or the only one)."),
    refs: list[str] | None = typer.Argument(
        None, help="data:NAME@vN, run:ID, PROJECT/MODEL@VERSION; none: the snapshots labvault.lock names."
    ),
    json_output: bool = JSON,
) -> None:
    """What the remote lacks (a push would send) and what this vault lacks (a pull would fetch):
    records and objects, for labvault.lock or the REFs. Exit 0 either way."""
    with _local_vault("remote status") as vault:
        if name is not None and any(c in name for c in ":@/") and name not in {r.name for r in vault.remotes.list()}:
            refs, name = [name, *(refs or [])], None  # a REF given with no remote name
        found = vault.remotes.status(refs or [], remote=name)
    if json_output:
        print_json(found.to_json())
        return
    OUTPUT.line(f"remote {found.remote} ({found.url})" + ("" if found.reachable else ": no vault there yet"))
    if found.in_sync:
        OUTPUT.line("in sync: both sides hold every record and object")
        return
    for label, lacks in (("the remote lacks", found.remote_lacks), ("this vault lacks", found.here_lacks)):
        if not lacks:
            OUTPUT.line(f"{label} nothing")
            continue
        shown = ", ".join(lacks.records())
        OUTPUT.line(f"{label}: {shown or 'no record'}" + (f"; {lacks.objects} objects" if lacks.objects else ""))


def push(
    refs: list[str] | None = REFS,
    remote: str | None = REMOTE,
    everything: bool = typer.Option(False, "--all", help="Every snapshot, finished run and model version."),
    jobs: int = JOBS,
    no_data: bool = NO_DATA,
    rename: bool = typer.Option(
        False,
        "--rename",
        help="Give a snapshot or version whose number the remote holds with other content the next free number.",
    ),
    dry_run: bool = DRY_RUN,
    json_output: bool = JSON,
) -> None:
    """Send snapshots, runs and model versions, with every object they need, to a remote.

    Objects go first (only those the remote lacks, in parallel, verified on arrival), records last
    in one transaction: an interrupted push leaves the remote consistent and a rerun resumes.
    Different content under a number the remote has is a conflict (exit 4) unless --rename.
    """
    with _local_vault("push") as vault:
        # Answered without SQLAlchemy (None for a server remote, or when it cannot tell): the no-op
        # push stays fast.
        result = None if refs or everything or dry_run else vault.remotes.is_pushed(remote)
        if result is None:
            with transfer_progress("pushing") as advance:
                result = vault.remotes.push(
                    refs or [],
                    remote=remote,
                    everything=everything,
                    jobs=jobs,
                    no_data=no_data,
                    rename=rename,
                    dry_run=dry_run,
                    progress=advance,
                )
    _report(result, json_output)


def pull(
    refs: list[str] | None = REFS,
    remote: str | None = REMOTE,
    jobs: int = JOBS,
    no_data: bool = NO_DATA,
    rename: bool = typer.Option(
        False,
        "--rename",
        help="Give a model version whose number this vault holds with other content the next free number.",
    ),
    dry_run: bool = DRY_RUN,
    checkout: bool = typer.Option(
        False,
        "--checkout",
        help="Then restore what labvault.lock names, as `labvault data checkout` does (one step, like `dvc pull`).",
    ),
    json_output: bool = JSON,
) -> None:
    """Fetch snapshots, runs and model versions, with every object they need, from a remote.

    With no REF, the snapshots labvault.lock names, found on the remote by content hash (then
    `labvault data checkout`, or `--checkout` here, restores them). Every record and object read from
    the remote is validated first: a corrupt object is exit 5 and nothing is recorded.
    """
    if checkout and dry_run:
        raise ValidationError("--checkout restores what a pull fetched; a dry run fetches nothing", hint="drop one")
    with _local_vault("pull") as vault:
        with transfer_progress("pulling") as advance:
            result = vault.remotes.pull(
                refs or [],
                remote=remote,
                jobs=jobs,
                no_data=no_data,
                rename=rename,
                dry_run=dry_run,
                progress=advance,
            )
        if not (checkout and json_output):  # with both, one JSON document after the checkout
            _report(result, json_output)
        if not checkout:
            return
        with progress("checking out", None) as advance:
            try:
                restored = vault.data.checkout(None, None, force=False, progress=advance, fetch=False)
            except Conflict as exc:  # the pull stands; the checkout is the user's to force
                raise Conflict(
                    str(exc), hint="snapshot them first with `labvault data add`, or `labvault data checkout --force`"
                ) from None
    if json_output:
        print_json({**result.to_json(), "checkout": [r.to_json() for r in restored]})
        return
    report_checkout(restored)


def report_checkout(results: list[Any]) -> None:
    """A line per restored snapshot, as `data checkout` and `pull --checkout` print them."""
    for r in results:
        OUTPUT.line(f"{r.path}  {r.ref}  {r.written} written, {r.removed} removed, {r.unchanged} unchanged")


def _report(result: Any, json_output: bool) -> None:
    for warning in result.warnings:
        OUTPUT.info(f"warning: {warning}")
    if json_output:
        print_json(result.to_json())
        return
    would = "would " if result.dry_run else ""
    for moved in result.records:
        if moved.action == "renamed":
            OUTPUT.line(f"{moved.ref} -> {moved.target}")
        elif moved.action == "new":
            OUTPUT.line(f"{would}{result.direction} {moved.ref}")
        elif moved.target != moved.ref:
            OUTPUT.line(f"{moved.ref} is already there as {moved.target}")
        else:
            OUTPUT.debug(f"{moved.ref} is already there")
    verb = "pushed" if result.direction == "push" else "pulled"
    if result.dry_run:
        OUTPUT.line(f"would send {result.objects_sent} objects ({result.objects_present} already there)")
    elif not result.changed:
        OUTPUT.line(
            f"nothing to {result.direction}: {result.remote} is up to date"
            if result.direction == "push"
            else f"nothing to pull: up to date with {result.remote}"
        )
    else:
        records = sum(m.action != "present" for m in result.records)
        OUTPUT.line(
            f"{verb} {result.objects_sent} objects ({human_bytes(result.bytes_sent)}), {records} records; "
            f"{result.objects_present} objects already there"
        )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="remote")
    root.command("push")(push)
    root.command("pull")(pull)
