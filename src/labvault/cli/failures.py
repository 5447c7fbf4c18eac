"""The CLI's one mapping from failures to messages and exit codes.

Both entry points use it: the lean ``data status`` path (no typer) and the full typer application.
Kept free of heavy imports for that reason.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable

from labvault.errors import LabvaultError

__all__ = ["exit_code_of", "fail"]


def fail(message: str, hint: str, code: int) -> int:
    """``error: <cause>`` and ``hint: <next step>`` on stderr; returns the exit code."""
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    return code


def exit_code_of(command: Callable[[], object]) -> int:
    """Run ``command``; map every expected failure to one line, a hint and the conventions' exit code."""
    try:
        command()
    except SystemExit as done:  # an exit code a command chose (`labvault run` exits with CMD's own)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except LabvaultError as err:
        return fail(err.message, err.hint, err.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", "", 130)
    except BrokenPipeError:
        # The reader went away (`labvault object cat X | head`); that is not an error.
        sys.stderr.close()
        return 0
    except OSError as err:
        if err.errno == errno.ENOSPC:
            return fail("disk full", "free some space, then run the command again", 7)
        return fail(f"{err.strerror or err}: {err.filename or ''}".rstrip(": "), "", 7)
    return 0
