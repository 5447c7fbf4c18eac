"""The ``labvault`` command: the typer root, the command groups, and the single error handler.

Commands parse, call the service layer and render; they contain no ``try``. Every expected failure
is a :class:`~labvault.errors.LabvaultError`, mapped by :func:`labvault.cli.failures.exit_code_of` to
``error: ...`` / ``hint: ...`` and its exit code; click's usage errors become ``ValidationError``
(exit 2) here, with the command's usage line as the hint, so they read the same. Heavy modules
(SQLAlchemy, the services) are imported inside commands, so ``--help`` starts fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from labvault.cli import (
    audit,
    data,
    env,
    lineage,
    login,
    maintenance,
    models,
    objects,
    pipeline,
    remotes,
    reproduce,
    runs,
    server,
    sync,
    ui,
    vault_config,
)
from labvault.cli.failures import exit_code_of
from labvault.cli.render import OUTPUT
from labvault.errors import EXIT_CODES, ExternalError, ValidationError

__all__ = ["app", "main"]

_EPILOG = "Exit codes: " + "; ".join(f"{code} {text.split(' (')[0]}" for code, text in EXIT_CODES.items())

app = typer.Typer(
    name="labvault",
    help="The lab notebook and the warehouse of a machine-learning team.",
    epilog=_EPILOG,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from labvault.cli.entry import print_version

        print_version()
        raise typer.Exit()


@app.callback()
def _root(
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print only errors (accepted before or after the command)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print more detail on stderr."),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print labvault's version and exit."
    ),
) -> None:
    """The lab notebook and the warehouse of a machine-learning team."""
    OUTPUT.quiet = OUTPUT.quiet or quiet
    OUTPUT.verbose = OUTPUT.verbose or verbose


maintenance.register(app)
app.add_typer(objects.app, name="object")
runs.register(app)
app.add_typer(models.app, name="models")
app.command("get")(models.get)
app.add_typer(audit.app, name="audit")
app.add_typer(data.app, name="data")
app.command("reproduce")(reproduce.reproduce_cmd)
app.add_typer(env.app, name="env")
app.add_typer(lineage.app, name="lineage")
app.add_typer(server.app, name="server")
app.command("ui")(ui.ui)
pipeline.register(app)  # with `pipeline import` (cli/pipeline_import.py)
app.add_typer(vault_config.config_app, name="config")
app.add_typer(vault_config.vault_app, name="vault")
remotes.register(app)
login.register(app)
app.command("sync")(sync.sync)

_GLOBAL_FLAGS = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose"}


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """Accept --quiet/--verbose anywhere before ``--`` (``labvault fsck -q`` as well as ``labvault -q fsck``).

    Not after ``run``: from its command's first word on, every argument is the command's own (``labvault
    run python -v train.py``), so ``run`` parses its own -q/-v before that word.
    """
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--" or (arg == "run" and not out):
            out.extend(argv[i:])
            break
        if arg in _GLOBAL_FLAGS:
            setattr(OUTPUT, _GLOBAL_FLAGS[arg], True)
            continue
        out.append(arg)
    return out


# Typer's own click, vendored in recent typer releases and the click package before: the module
# that defines its exceptions, whichever it is.
_CLICK: Any = importlib.import_module(typer.BadParameter.__module__)
# Click 8.2 raises it for a group given no arguments; older releases print the help and exit 0.
_NO_ARGS: Any = getattr(_CLICK, "NoArgsIsHelpError", ())


def _command_path(root: Any, args: list[str]) -> str:
    """``labvault gc`` for ``gc --grace``: the command words at the start of ``args``."""
    words = ["labvault"]
    command = root
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        words.append(arg)
        command = sub
    return " ".join(words)


def _usage_error(err: Any, fallback_path: str) -> ValidationError:
    """Click's four-line block as one ``error:`` line, with the usage line and --help as the hint."""
    text = " ".join(err.format_message().split()).rstrip(".")
    message = text[:1].lower() + text[1:]
    if err.ctx is None:  # the option parser's errors carry no context
        return ValidationError(message, hint=f"see `{fallback_path} --help`")
    usage = " ".join(err.ctx.get_usage().removeprefix("Usage: ").split())
    return ValidationError(message, hint=f"{usage} (see `{err.ctx.command_path} --help`)")


def _invoke(args: list[str]) -> None:
    """Run the typer application; usage errors become ValidationError, mapped with every other error."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="labvault", standalone_mode=False)
    except _NO_ARGS as asked:  # `labvault` or `labvault runs` alone: the help
        sys.stdout.write(asked.format_message() + "\n")
        return
    except _CLICK.UsageError as err:
        raise _usage_error(err, _command_path(command, args)) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except _CLICK.ClickException as err:  # a file option that cannot be opened, and the like
        raise ExternalError(err.format_message()) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    args = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    return exit_code_of(lambda: _invoke(args))


def run() -> None:
    sys.exit(main())
