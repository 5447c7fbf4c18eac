"""The everyday read commands, answered without typer, pydantic or SQLAlchemy.

``runs list``, ``runs show``, ``models list``, ``models versions``, ``models show MODEL``, ``data list``,
``data log``, ``data show`` and ``audit log`` are run many times a day, in scripts and prompts; through the typer
application they start in about 0.5 s before reading a row (SQLAlchemy alone takes 0.3 s to import).
:func:`run_read` answers them from :meth:`Vault.lean_reader` (the standard ``sqlite3`` module) and
prints, in :mod:`labvault.cli.lean_views`, what the typer commands print, byte for byte
(``tests/e2e/test_lean.py`` runs each command through both paths and compares). Anything this module
does not answer exactly goes to the typer application: options it does not know (``--help``, a
usage error), a schema to migrate, an unknown name (whose error message the services own).
``runs list --filter/--sort`` parses with the tracking service's parser and runs the statement of
:mod:`labvault.storage.meta.run_filter`, the compiler the full path uses too.
"""

from __future__ import annotations

from typing import Any

from labvault.cli.failures import exit_code_of
from labvault.cli.render import OUTPUT

__all__ = ["FULL_PATH_VARIABLE", "run_read"]

#: Set to 1 to send every command to the typer application (the tests compare both paths with it).
FULL_PATH_VARIABLE = "LABVAULT_CLI_FULL"

_MAX_LIMIT = 2**63 - 1  # SQL's LIMIT is a 64-bit integer; sqlite3 cannot even bind a larger one

_GLOBAL = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose"}
# A command: (positional names, {option: (name, takes a value)}); the parse keeps only what it knows.
_Spec = tuple[tuple[str, ...], dict[str, tuple[str, bool]]]
_JSON = {"--json": ("json", False)}
_SPECS: dict[tuple[str, str], _Spec] = {
    ("runs", "list"): (
        (),
        {
            **_JSON,
            "--project": ("project", True),
            "-p": ("project", True),
            "--limit": ("limit", True),
            "-l": ("limit", True),
            "--deleted": ("deleted", False),
            "--filter": ("filter", True),
            "-f": ("filter", True),
            "--sort": ("sort", True),
            "-s": ("sort", True),
        },
    ),
    ("runs", "show"): (("run",), _JSON),
    ("models", "list"): ((), _JSON),
    ("models", "versions"): (("name",), {**_JSON, "--all": ("all", False)}),
    ("data", "list"): ((), _JSON),
    ("data", "log"): (("name",), _JSON),
    ("data", "show"): (("ref",), _JSON),
    ("models", "show"): (("ref",), _JSON),
    ("audit", "log"): (
        (),
        {
            **_JSON,
            "--subject": ("subject", True),
            "--action": ("action", True),
            "--limit": ("limit", True),
            "-n": ("limit", True),
        },
    ),
}


def _is_utf8(arg: str) -> bool:
    """False for an argument that was not UTF-8 bytes (Python keeps those as lone surrogates)."""
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse(argv: list[str]) -> tuple[set[str], tuple[str, str], dict[str, Any]] | None:
    """``(global flags, command, values)``, or None for anything the typer application must parse."""
    if "--" in argv or not all(_is_utf8(a) for a in argv):
        return None  # the services word what is wrong with a non-UTF-8 argument
    flags = {_GLOBAL[a] for a in argv if a in _GLOBAL}
    args = [a for a in argv if a not in _GLOBAL]
    if len(args) < 2 or (args[0], args[1]) not in _SPECS:
        return None
    command = (args[0], args[1])
    names, options = _SPECS[command]
    values: dict[str, Any] = {}
    positional: list[str] = []
    rest = iter(args[2:])
    for arg in rest:
        key, eq, text = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        value: str | None = text if eq else None
        if key in options:
            name, takes_value = options[key]
            if not takes_value:
                if value is not None:
                    return None
                values[name] = True
                continue
            # As click does, the next argument is the value even when it starts with "-" (`-s -started`).
            value = value if value is not None else next(rest, None)
            if value is None or name in values:
                return None
            values[name] = value
        elif arg.startswith("-") or len(positional) == len(names):
            return None
        else:
            positional.append(arg)
    if len(positional) != len(names):
        return None
    values.update(zip(names, positional, strict=True))
    if "limit" in values:
        text = values["limit"]
        if not (text.isascii() and text.isdigit()):
            return None
        values["limit"] = int(text)
        if values["limit"] > _MAX_LIMIT or (command == ("audit", "log") and values["limit"] < 1):
            return None  # out of range: the full path says so (exit 2)
    return flags, command, values


def run_read(argv: list[str]) -> int | None:
    """Answer a read command and return its exit code; None when the typer application must."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    flags, command, values = parsed
    answered = True

    def attempt() -> None:
        nonlocal answered
        from labvault.cli.lean_views import COMMANDS
        from labvault.vault import Vault

        with Vault.open() as vault, vault.lean_reader() as reader:
            answered = reader is not None and COMMANDS[command](reader, values, vault)

    OUTPUT.quiet = OUTPUT.quiet or "quiet" in flags
    OUTPUT.verbose = OUTPUT.verbose or "verbose" in flags
    code = exit_code_of(attempt)
    return code if answered else None
