"""``labvault sync``: send what tracking through a server left in the local spool."""

from __future__ import annotations

import typer

from labvault.cli.render import OUTPUT, print_json

__all__ = ["sync"]


def sync(
    wait: float = typer.Option(
        30.0, "--wait", min=0.0, help="Seconds to keep retrying while the server is away or busy."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Send the spooled params, tags and metrics of runs whose process stopped before the server had them.

    Works through the server of LABVAULT_URI (or `labvault login`). A run whose process died without
    ending it is ended as killed once its points are sent. Spools of processes still running are left
    to them (status "live"). Exit 0 when everything was sent, else the first failure's exit code.
    """
    import time

    from labvault.client.sender import send_orphans
    from labvault.client.settings import server_target, spool_dir
    from labvault.client.spool import server_folder
    from labvault.client.transport import Transport
    from labvault.errors import ValidationError

    target = server_target()
    if target is None:
        raise ValidationError(
            "`labvault sync` sends spooled tracking to a server, and none is set",
            hint="set LABVAULT_URI and LABVAULT_TOKEN, or run `labvault login URL`",
        )
    started = time.monotonic()
    with Transport(target, timeout=30.0) as transport:
        transport.check_version()
        reports = send_orphans(server_folder(spool_dir(), target.url), transport, retry_for=wait)
    if json_output:
        print_json([r.to_json() for r in reports])
    elif not reports:
        OUTPUT.line(f"nothing to send to {target.url}")
    else:
        rows = []
        for r in reports:
            doc = r.to_json()
            rows.append(
                [
                    doc["ref"],
                    doc["status"],
                    doc["batches"],
                    doc["metrics"],
                    doc["params"],
                    doc["tags"],
                    doc["ended"] or "",
                ]
            )
        OUTPUT.table(["run", "status", "batches", "metrics", "params", "tags", "ended"], rows)
        OUTPUT.info(
            f"{sum(r.done for r in reports)} of {len(reports)} spools sent in {time.monotonic() - started:.1f}s"
        )
    failed = next((r.error for r in reports if r.error is not None), None)
    if failed is not None:
        raise failed
