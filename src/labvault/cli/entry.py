"""The ``labvault`` executable's entry point.

``labvault --version``, ``labvault version``, ``labvault data status`` and ``labvault data add`` are
answered here without importing typer and pydantic (about 0.2 s of start-up on a small machine): they
are run after every change to the data, and in prompts and hooks, so they must start lean. Every
other command, and any call with options this parser does not know (``--help``, a usage error), goes
to the full typer application in :mod:`labvault.cli.app`, which runs the same functions. The read
commands have their lean path in :mod:`labvault.cli.lean`. ``LABVAULT_CLI_FULL=1`` sends every
command to the typer application: the tests run the same commands both ways and compare.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["main", "print_version", "run", "show_version"]

_GLOBAL = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose"}


def _data_command(argv: list[str], verb: str) -> tuple[set[str], list[str]] | None:
    """``(global flags, arguments after "data VERB")`` if ``argv`` is ``data VERB ...``."""
    flags = {_GLOBAL[a] for a in argv if a in _GLOBAL}
    args = [a for a in argv if a not in _GLOBAL]
    if len(args) < 2 or args[0] != "data" or args[1] != verb or "--" in args:
        return None
    return flags, args[2:]


def _run_lean(flags: set[str], command: Callable[[], object]) -> int:
    from labvault.cli.failures import exit_code_of
    from labvault.cli.render import OUTPUT

    OUTPUT.quiet = OUTPUT.quiet or "quiet" in flags
    OUTPUT.verbose = OUTPUT.verbose or "verbose" in flags
    return exit_code_of(command)


def _fast_status(argv: list[str]) -> int | None:
    parsed = _data_command(argv, "status")
    if parsed is None:
        return None
    flags, args = parsed
    positional: list[str] = []
    json_output = False
    for arg in args:
        if arg == "--json":
            json_output = True
        elif arg.startswith("-") or len(positional) == 2:
            return None  # let typer report the usage error or print the help
        else:
            positional.append(arg)
    from labvault.cli.data_status import run_status

    name, path = ([*positional, None, None])[:2]
    return _run_lean(flags, lambda: run_status(name, path, json_output=json_output))


def _fast_add(argv: list[str]) -> int | None:
    parsed = _data_command(argv, "add")
    if parsed is None:
        return None
    flags, args = parsed
    positional: list[str] = []
    message = ""
    json_output = False
    gitignore = True
    rest = iter(args)
    for arg in rest:
        if arg == "--json":
            json_output = True
        elif arg == "--no-gitignore":
            gitignore = False
        elif arg in ("-m", "--message"):
            value = next(rest, None)
            if value is None:
                return None  # typer reports the missing value
            message = value
        elif arg.startswith("--message="):
            message = arg.split("=", 1)[1]
        elif arg.startswith("-") or len(positional) == 2:
            return None
        else:
            positional.append(arg)
    if len(positional) != 2:
        return None
    from labvault.cli.data_add import run_add

    name, path = positional
    return _run_lean(flags, lambda: run_add(name, path, message=message, json_output=json_output, gitignore=gitignore))


def _fast_pipeline(argv: list[str]) -> int | None:
    """``pipeline status`` and ``pipeline run`` (a no-op run must start and answer fast)."""
    args = [a for a in argv if a not in _GLOBAL]
    if len(args) < 2 or args[0] != "pipeline":
        return None
    from labvault.cli.pipeline_views import parse_lean, run_lean

    if parse_lean(args) is None:
        return None
    return _run_lean({_GLOBAL[a] for a in argv if a in _GLOBAL}, lambda: _exit_with(run_lean(args)))


def _exit_with(code: int | None) -> None:
    if code:
        raise SystemExit(code)


def print_version() -> None:
    from importlib.metadata import version

    sys.stdout.write(f"labvault {version('labvault')}\n")


def show_version(*, json_output: bool) -> None:
    """``labvault version [--json]``, on both paths."""
    from importlib.metadata import version

    from labvault.cli.render import OUTPUT, print_json

    if json_output:
        print_json({"version": version("labvault")})
    else:
        OUTPUT.line(f"labvault {version('labvault')}")


def _fast_version(argv: list[str]) -> int | None:
    flags = {_GLOBAL[a] for a in argv if a in _GLOBAL}
    args = [a for a in argv if a not in _GLOBAL]
    if args not in (["version"], ["version", "--json"]):
        return None
    return _run_lean(flags, lambda: show_version(json_output=len(args) == 2))


def _through_server() -> bool:
    if os.environ.get("LABVAULT_URI"):
        return True
    from labvault.client.settings import credentials_path

    return not os.environ.get("LABVAULT_DIR") and credentials_path().is_file()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if [a for a in args if a not in _GLOBAL] == ["--version"]:
        print_version()
        return 0
    from labvault.cli.lean import FULL_PATH_VARIABLE, run_read

    # Through a server (LABVAULT_URI or a saved login) every command takes the full path.
    local = os.environ.get(FULL_PATH_VARIABLE) != "1" and not _through_server()
    for fast in (_fast_version, _fast_status, _fast_add, _fast_pipeline, run_read):
        code = fast(args) if local or fast is _fast_version else None
        if code is not None:
            return code
    from labvault.cli.app import main as full_main

    return full_main(args)


def run() -> None:
    sys.exit(main())
