"""``labvault ui``: the web UI of this vault for one user: the server on loopback, without tokens.

Without authentication the server still refuses a request whose ``Host`` is not a loopback name with
its port, or whose ``Origin`` is another site (``server/middleware.py``), so that a web page open in
the same browser cannot drive it.
"""

from __future__ import annotations

import sys
import threading
import time
import webbrowser

import typer

from labvault.cli.server import run_server

__all__ = ["ui"]


def _open_when_ready(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                webbrowser.open(url + "/runs")
                return
        except httpx.TransportError:
            time.sleep(0.2)


def ui(
    port: int = typer.Option(8478, "--port", min=1, max=65535, help="Port to listen on (on 127.0.0.1)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Print the address; do not open a browser."),
) -> None:
    """Open this vault's web UI: runs, charts, comparisons (the server on 127.0.0.1, no sign-in)."""
    url = f"http://127.0.0.1:{port}"
    sys.stdout.write(f"{url}/\n")  # the command's one result, even with --quiet
    sys.stdout.flush()
    if not no_browser:
        threading.Thread(target=_open_when_ready, args=(url,), daemon=True).start()
    run_server(
        host="127.0.0.1",
        port=port,
        workers=1,
        no_auth=True,
        banner=f"labvault ui: serving this vault at {url}/ (Ctrl-C stops it)",
    )
