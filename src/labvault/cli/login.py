"""``labvault login URL`` and ``labvault logout``: keep a server's URL and token for later commands.

The token is checked before it is stored: the server must speak this labvault's API version
(else exit 2, naming both) and accept the token (else exit 8, "token rejected"); an unreachable
server is exit 7. It is stored in ``$XDG_CONFIG_HOME/labvault/credentials.json`` with mode 0600;
``LABVAULT_URI`` and ``LABVAULT_TOKEN`` still win over it.
"""

from __future__ import annotations

import os
import sys

import typer

from labvault.cli.render import OUTPUT, print_json
from labvault.errors import ValidationError

__all__ = ["login", "logout", "register"]

JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


def _read_token(given: str | None) -> str:
    if given is not None:
        token = given
    elif sys.stdin.isatty():
        import getpass

        token = getpass.getpass("token: ")
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token or any(c.isspace() for c in token) or len(token) > 4096:
        raise ValidationError("no valid token given", hint="pass --token, pipe it on stdin, or type it at the prompt")
    return token


def login(
    url: str = typer.Argument(..., help="The server: http://HOST:PORT, as `labvault server` prints it."),
    token: str | None = typer.Option(
        None,
        "--token",
        help="The API token (from `labvault server token create`). Default: read from stdin, or asked for "
        "when stdin is a terminal (a token on the command line may end up in the shell's history).",
    ),
    json_output: bool = JSON,
) -> None:
    """Check a token against a server and store both for later commands (mode 0600).

    Exit 8 if the server rejects the token, 7 if it cannot be reached, 2 if it speaks another API
    version. LABVAULT_URI and LABVAULT_TOKEN, when set, still take precedence over the stored login.
    """
    from labvault.client.settings import ENV_URI, ServerTarget, normalize_url, save_login
    from labvault.client.transport import Transport

    base = normalize_url(url)
    secret = _read_token(token)
    with Transport(ServerTarget(base, secret), timeout=30.0) as transport:
        info = transport.check_version()
        me = transport.request("GET", "/whoami")
    if not isinstance(me, dict) or not all(isinstance(me.get(k), str) for k in ("user", "role")):
        raise ValidationError(f"{base} did not say who the token belongs to", hint="is it a labvault server?")
    path = save_login(base, secret)
    if json_output:
        print_json(
            {
                "url": base,
                "user": me["user"],
                "role": me["role"],
                "token_id": me.get("token"),
                "server_version": info.get("labvault"),
                "path": str(path),
            }
        )
    else:
        OUTPUT.line(f"logged in to {base} as {me['user']} (role {me['role']})")
        OUTPUT.info(f"token saved in {path}")
    env_url = os.environ.get(ENV_URI)
    if env_url and env_url.rstrip("/") != base:
        sys.stderr.write(f"warning: {ENV_URI}={env_url} is set and takes precedence over this login\n")


def logout(json_output: bool = JSON) -> None:
    """Forget the stored server URL and token (a no-op when none is stored)."""
    from labvault.client.settings import credentials_path, forget_login

    path = credentials_path()
    removed = forget_login()
    if json_output:
        print_json({"removed": removed, "path": str(path)})
    else:
        OUTPUT.line(f"logged out (removed {path})" if removed else "not logged in: nothing to remove")


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
