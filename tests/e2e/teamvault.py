"""Run chosen end-to-end tests on a team vault (PostgreSQL + S3 on the moto server) as well.

A test module overrides its ``cli`` fixture with :func:`team_or_local_cli`; a test marked
``@TEAM`` then runs twice: on the usual local vault, and with every ``labvault init`` given
``--db <a fresh schema> --objects s3://<a fresh bucket>/vault`` and every command the S3 server's
``AWS_*`` variables. The subset is representative (each module's workflow, its JSON listings, its
bad input), to keep the added time near a few minutes. ``@TEAM_FULL`` runs the team half only with
``LABVAULT_TEST_FULL=1``: the default run keeps one team test per module, the full run all of them.
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import Cli

__all__ = ["TEAM", "TEAM_FULL", "team_or_local_cli"]

_FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"

TEAM = pytest.mark.parametrize("cli", ["local", pytest.param("team", marks=pytest.mark.postgres)], indirect=True)
TEAM_FULL = pytest.mark.parametrize(
    "cli",
    [
        "local",
        pytest.param(
            "team",
            marks=[pytest.mark.postgres, pytest.mark.skipif(not _FULL, reason="team half: LABVAULT_TEST_FULL=1")],
        ),
    ],
    indirect=True,
)

_OWN_STORE_FLAGS = {"--db", "--objects", "--join", "--help", "-h"}


def team_or_local_cli(request: pytest.FixtureRequest, cli: Cli) -> Cli:
    if getattr(request, "param", "local") != "team":
        return cli
    db = request.getfixturevalue("pg_url")
    s3 = request.getfixturevalue("s3_server")
    objects = f"s3://{s3.bucket()}/vault"

    def run(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> object:
        if args and args[0] == "init" and not _OWN_STORE_FLAGS & set(args):
            args = (*args, "--db", db, "--objects", objects)
        return cli(*args, env={**s3.env(), **(env or {})}, **kwargs)  # type: ignore[arg-type]

    return run  # type: ignore[return-value]
