"""``labvault audit log|verify``: the append-only, hash-chained record of registry decisions."""

from __future__ import annotations

import typer

from labvault.cli.context import open_vault
from labvault.cli.lean_views import print_audit_events
from labvault.cli.render import OUTPUT, print_json
from labvault.errors import CheckFailed

__all__ = ["app"]

app = typer.Typer(help="The audit log: who moved what, when, and on what evidence.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("log")
def log(
    subject: str | None = typer.Option(None, "--subject", help="Only events whose subject starts with this."),
    action: str | None = typer.Option(
        None, "--action", help="Only this action: register, approve, promote, refuse, rollback, unset, archive."
    ),
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="Only the newest N events."),
    json_output: bool = JSON,
) -> None:
    """List audit events, oldest first."""
    with open_vault() as vault:
        events = vault.registry.audit.events(subject_prefix=subject, action=action, limit=limit, newest_first=True)
    print_audit_events(events, json_output=json_output)


@app.command("verify")
def verify(
    against: str | None = typer.Option(
        None,
        "--against",
        metavar="HEAD",
        help="A head kept elsewhere (a git tag, a CI artifact): `SEQ sha256:HEX`, `sha256:HEX`, or a file "
        "holding one of them or the output of `audit verify --json`; it must be an event of the chain.",
    ),
    json_output: bool = JSON,
) -> None:
    """Re-hash the whole chain and compare its end with the recorded heads (exit 1 naming the first bad event)."""
    with open_vault() as vault:
        report = vault.registry.verify_audit(against=against)
    if json_output:
        print_json(
            {
                "ok": report.ok,
                "events": report.events,
                "head": report.head,
                "first_bad": report.first_bad,
                "problems": list(report.problems),
                "notes": list(report.notes),
            }
        )
    else:
        for note in report.notes:
            OUTPUT.info(f"note: {note}")
        if report.ok:
            OUTPUT.line(f"audit chain intact: {report.events} events, head {report.head or '(empty)'}")
        else:
            for problem in report.problems:
                OUTPUT.info(f"problem: {problem}")
    if not report.ok:
        raise CheckFailed(
            f"audit chain broken at event #{report.first_bad}: {report.problems[0]}",
            hint="the history was edited, deleted or truncated; restore the database from a backup",
        )
