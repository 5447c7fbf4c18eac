"""The config files a run records: read byte for byte, before the run exists.

Its own module because a run started through a server reads them too (:mod:`labvault.client`),
and that path must not load the tracking service's metadata layer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from labvault.errors import ValidationError

__all__ = ["read_configs"]


def read_configs(config: Iterable[str | os.PathLike[str]], cwd: Path) -> list[tuple[str, bytes]]:
    """Each config file's path as given and its bytes; a missing one is refused before any run exists."""
    out = []
    for item in [config] if isinstance(config, str | os.PathLike) else config:
        path = Path(item)
        full = path if path.is_absolute() else cwd / path
        if not full.is_file():
            raise ValidationError(f"config file {str(item)!r} not found", hint="give the path of an existing file")
        out.append((str(item), full.read_bytes()))
    return out
