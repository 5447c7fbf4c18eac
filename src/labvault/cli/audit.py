"""``labvault audit log|verify``: the append-only, hash-chained record of registry decisions."""

from __future__ import annotations

from typing import Any

import typer

from labvault.cli.context import open_vault
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
    from labvault.entities import format_time

    with open_vault() as vault:
        events = vault.registry.audit.events(subject_prefix=subject, action=action, limit=limit, newest_first=True)
    events.reverse()
    docs: list[dict[str, Any]] = [
        {
            "id": e.seq,
            "ref": f"audit:{e.seq}",
            "seq": e.seq,
            "at": format_time(e.at),
            "actor": e.actor,
            "action": e.action,
            "subject": e.subject,
            "before": e.before,
            "after": e.after,
            "policy_hash": f"sha256:{e.policy_hash}" if e.policy_hash else None,
            "details": e.details,
            "prev_hash": f"sha256:{e.prev_hash}",
            "hash": f"sha256:{e.hash}",
        }
        for e in events
    ]
    if json_output:
        print_json(docs)
        return
    OUTPUT.table(
        ["#", "at", "actor", "action", "subject", "before", "after"],
        [
            (d["seq"], d["at"], d["actor"], d["action"], d["subject"], d["before"] or "-", d["after"] or "-")
            for d in docs
        ],
    )


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
