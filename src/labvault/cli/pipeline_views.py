"""``labvault pipeline status`` and ``run``, kept lean (no typer, pydantic, rich or SQLAlchemy on a no-op).

:mod:`labvault.cli.entry` answers ``pipeline status`` and ``pipeline run`` with the options below
through :func:`run_lean`, so a no-op run starts and answers in well under 0.1 s; anything else (``--help``,
an unknown option, ``--executor``) goes to the typer commands in :mod:`labvault.cli.pipeline`, which
call the same functions.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any

from labvault.cli.render import OUTPUT, print_json
from labvault.errors import LabvaultError

__all__ = ["parse_lean", "print_status", "run_command", "status_command"]

_STATE = {"up to date": "up to date", "frozen": "frozen", "restore": "will restore from cache", "run": "will run"}


def print_status(decisions: list[Any], *, json_output: bool) -> None:
    if json_output:
        print_json([d.to_json() for d in decisions])
        return
    width = max((len(d.name) for d in decisions), default=0)
    for d in decisions:
        why = f": {'; '.join(d.reasons)}" if d.reasons and d.state not in ("up to date",) else ""
        OUTPUT.line(f"{d.name:<{width}}  {_STATE[d.state]}{why}")


def status_command(
    stages: list[str], *, json_output: bool = False, downstream: bool = False, ignore_env: bool = False
) -> None:
    from labvault.cli.context import open_project_vault

    with open_project_vault("pipeline status") as vault:
        decisions = vault.pipelines.status(stages, downstream=downstream, ignore_env=ignore_env)
    print_status(decisions, json_output=json_output)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_command(
    stages: list[str],
    *,
    force: bool = False,
    downstream: bool = False,
    jobs: int | None = None,
    executor: str = "local",
    dry_run: bool = False,
    keep_going: bool = False,
    ignore_env: bool = False,
    json_output: bool = False,
) -> None:
    from labvault.cli.context import open_project_vault

    if jobs is not None and jobs < 1:
        from labvault.errors import ValidationError

        raise ValidationError(f"--jobs must be at least 1, not {jobs}", hint="pass --jobs N with N >= 1")
    with open_project_vault("pipeline run") as vault:
        if dry_run:
            decisions = vault.pipelines.status(stages, downstream=downstream, force=force, ignore_env=ignore_env)
            print_status(decisions, json_output=json_output)
            return
        vault.pipelines.argv = ["labvault", "pipeline", "run", *sys.argv[3:]]
        previous = signal.signal(signal.SIGTERM, _interrupt)  # a stop request is handled like Ctrl-C
        try:
            reports = vault.pipelines.run(
                stages,
                force=force,
                downstream=downstream,
                jobs=jobs,
                executor=executor,
                keep_going=keep_going,
                ignore_env=ignore_env,
                say=OUTPUT.info,
            )
        finally:
            signal.signal(signal.SIGTERM, previous)
    if json_output:
        print_json([r.to_json() for r in reports])
    else:
        counts: dict[str, int] = {}
        for r in reports:
            counts[r.state] = counts.get(r.state, 0) + 1
        order = ("ran", "restored", "up to date", "failed", "skipped", "not started", "cancelled")
        OUTPUT.line(", ".join(f"{counts[s]} {s}" for s in order if s in counts) or "no stages")
    failed = [r for r in reports if r.state == "failed"]
    if failed:
        more = f" (and {len(failed) - 1} more failed)" if len(failed) > 1 else ""
        raise LabvaultError(
            f"{failed[0].error}{more}",
            hint="fix it and run `labvault pipeline run` again; the stages that finished are cached",
        )


_FLAGS = {
    "--force": "force",
    "-f": "force",
    "--downstream": "downstream",
    "--dry-run": "dry_run",
    "--keep-going": "keep_going",
    "-k": "keep_going",
    "--ignore-env": "ignore_env",
    "--json": "json_output",
}


def parse_lean(args: list[str]) -> tuple[str, list[str], dict[str, Any]] | None:
    """``(verb, stages, options)`` of ``pipeline status|run ...``, or None for the typer application."""
    if len(args) < 2 or args[0] != "pipeline" or args[1] not in ("status", "run") or "--" in args:
        return None
    verb = args[1]
    allowed = {"--json", "--downstream", "--ignore-env"} if verb == "status" else set(_FLAGS)
    stages: list[str] = []
    options: dict[str, Any] = {}
    rest = iter(args[2:])
    for arg in rest:
        if arg in allowed:
            options[_FLAGS[arg]] = True
        elif verb == "run" and arg in ("--jobs", "-j"):
            value = next(rest, None)
            if value is None or not value.isascii() or not value.isdigit():
                return None
            options["jobs"] = int(value)
        elif arg.startswith("-"):
            return None
        else:
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                return None
            stages.append(arg)
    return verb, stages, options


def run_lean(args: list[str]) -> int | None:
    parsed = parse_lean(args)
    if parsed is None:
        return None
    from labvault.cli.failures import exit_code_of

    verb, stages, options = parsed
    if verb == "status":
        return exit_code_of(lambda: status_command(stages, **options))
    return exit_code_of(lambda: run_command(stages, **options))
