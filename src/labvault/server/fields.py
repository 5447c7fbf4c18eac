"""Field types shared by the API's request bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, Strict

__all__ = ["HostName", "PlainPath", "ProcessId"]


def _plain_text(value: str) -> str:
    """A client's path, shown in listings, never opened: no control characters (a terminal would act on them)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("a path is plain text: no control characters")
    return value


#: A path as the client named it: text to record and show, bounded, never a path the server opens.
PlainPath = Annotated[str, Field(max_length=4096), AfterValidator(_plain_text)]


def _host_name(value: str) -> str:
    """A client's host name, compared with a reader's own: one word of printable characters."""
    if any(ord(c) <= 32 or ord(c) == 127 for c in value):
        raise ValueError("a host name has no spaces or control characters")
    return value


#: The host a client's process runs on, as ``socket.gethostname()`` gives it (the runs table holds 256).
HostName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_host_name)]

#: A client's process id: a JSON integer (not "12", not 12.0), positive, within a 32-bit pid_t.
ProcessId = Annotated[int, Strict(), Field(ge=1, le=2**31 - 1)]
