"""The ``labvault`` command: the typer root, the command groups, and the single error handler.

Commands parse, call the service layer and render; they contain no ``try``. Every expected failure
is a :class:`~labvault.errors.LabvaultError`, mapped here to ``error: ...`` / ``hint: ...`` and its
exit code. Heavy modules (SQLAlchemy, the services) are imported inside commands, so ``--help``
starts fast.
"""

from __future__ import annotations

import sys

import typer

from labvault.cli import audit, data, env, maintenance, models, objects, reproduce, runs
from labvault.cli.failures import exit_code_of
from labvault.cli.render import OUTPUT
from labvault.errors import EXIT_CODES

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


@app.callback()
def _root(
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print only errors (accepted before or after the command)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print more detail on stderr."),
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

_GLOBAL_FLAGS = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose"}


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """Accept --quiet/--verbose anywhere before ``--`` (``labvault fsck -q`` as well as ``labvault -q fsck``)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg in _GLOBAL_FLAGS:
            setattr(OUTPUT, _GLOBAL_FLAGS[arg], True)
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    return exit_code_of(lambda: app(args=args, prog_name="labvault"))


def run() -> None:
    sys.exit(main())
