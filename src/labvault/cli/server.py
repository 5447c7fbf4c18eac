"""``labvault server``: run the team server over this vault; ``labvault server token``: its API tokens.

Token commands run on the server machine only (they open the vault directly; no HTTP route manages
tokens).
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys

import typer

from labvault.cli.context import open_local_vault, open_vault
from labvault.cli.render import OUTPUT, print_json
from labvault.entities import format_time, utcnow
from labvault.entities.access import ApiToken
from labvault.errors import ValidationError

__all__ = ["HTTP_PROTOCOL", "app", "run_server"]

app = typer.Typer(
    help="The team server: one REST API over this vault, with tokens and roles (docs/server.md).",
    invoke_without_command=True,
)
token_app = typer.Typer(help="API tokens of the team server: create, list, revoke.", no_args_is_help=True)
app.add_typer(token_app, name="token")

_ROLES = "reader, writer, maintainer or admin"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.callback()
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8477, "--port", min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Server processes (each opens the vault)."),
    no_auth: bool = typer.Option(
        False, "--no-auth", help="Accept requests without a token, as this vault's user (loopback addresses only)."
    ),
) -> None:
    """Serve this vault's REST API at http://HOST:PORT/api/v1 (schema: /api/v1/openapi.json, docs: /api/docs)."""
    if ctx.invoked_subcommand is not None:
        return
    if no_auth and not _is_loopback(host):
        raise ValidationError(
            f"--no-auth is allowed only on a loopback address, not {host}",
            hint="make tokens with `labvault server token create`, or listen on 127.0.0.1",
        )
    run_server(host=host, port=port, workers=workers, no_auth=no_auth)


#: uvicorn's HTTP protocol, by name (the command line imports no server code): request bodies handed
#: over without copies, on the uvicorn releases that was checked against; else uvicorn's own choice.
HTTP_PROTOCOL = "labvault.server.http_protocol:Protocol"


def run_server(*, host: str, port: int, workers: int, no_auth: bool, banner: str | None = None) -> None:
    """Serve the current vault with uvicorn until interrupted (``labvault server``, ``labvault ui``)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise ValidationError(
            f"the server needs {err.name}, which is not installed", hint="pip install 'labvault[server]'"
        ) from None
    with open_vault() as vault:
        vault.meta  # noqa: B018 - migrate once here, not racing in every worker
        os.environ["LABVAULT_SERVER_VAULT"] = str(vault.dir)
    os.environ["LABVAULT_SERVER_NO_AUTH"] = "1" if no_auth else "0"
    OUTPUT.info(banner or f"labvault server: serving {vault.dir} at http://{host}:{port}/api/v1 (docs at /api/docs)")
    uvicorn.run(
        "labvault.server.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,  # the server logs each request itself, as one JSON line (server/middleware.py)
        timeout_graceful_shutdown=30,
        http=HTTP_PROTOCOL,
    )


def _days(text: str | None) -> int | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d{1,6})d?", text.strip())
    if match is None:
        raise ValidationError(f"invalid --expires {text!r}", hint="give a number of days, such as 90 or 90d")
    return int(match.group(1))


@token_app.command("create")
def token_create(
    user: str = typer.Argument(..., help="Who holds the token: the name the audit log records."),
    role: str = typer.Option(..., "--role", help=f"What the token may do: {_ROLES}."),
    expires: str | None = typer.Option(None, "--expires", metavar="DAYS", help="Expire after DAYS days (90 or 90d)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Make a token and print it once; only its salted hash is stored."""
    with open_local_vault("server token") as vault:
        token, text = vault.access.create_token(user, role=role, expires_days=_days(expires))
    if json_output:
        print_json(dict(_token_json(token), token=text))
        return
    sys.stdout.write(f"{text}\n")  # even with --quiet: it is the command's one result
    OUTPUT.info(f"token {token.id} for {token.user} ({token.role}); it is shown only this once")


def _token_json(token: ApiToken) -> dict[str, object]:
    return {
        "id": token.id,
        "user": token.user,
        "role": token.role,
        "state": token.state(utcnow()),
        "created_at": format_time(token.created_at),
        "created_by": token.created_by,
        "expires_at": format_time(token.expires_at) if token.expires_at else None,
        "revoked_at": format_time(token.revoked_at) if token.revoked_at else None,
    }


@token_app.command("list")
def token_list(json_output: bool = typer.Option(False, "--json", help="Print one JSON array on stdout.")) -> None:
    """List tokens (never their secrets): id, user, role, state, dates."""
    with open_local_vault("server token") as vault:
        docs = [_token_json(t) for t in vault.access.tokens()]
    if json_output:
        print_json(docs)
        return
    columns = ("id", "user", "role", "state", "created_at", "expires_at")
    OUTPUT.table(columns, [[d[c] for c in columns] for d in docs])


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., metavar="ID", help="The token's id (see `token list`).")) -> None:
    """Revoke a token: every request with it is refused (401) from now on."""
    with open_local_vault("server token") as vault:
        token = vault.access.revoke_token(token_id)
    OUTPUT.line(f"revoked token {token.id} of {token.user}")
