"""Field types shared by the API's request bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = ["PlainPath"]


def _plain_text(value: str) -> str:
    """A client's path, shown in listings, never opened: no control characters (a terminal would act on them)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("a path is plain text: no control characters")
    return value


#: A path as the client named it: text to record and show, bounded, never a path the server opens.
PlainPath = Annotated[str, Field(max_length=4096), AfterValidator(_plain_text)]
