"""Capture settings from ``labvault.yaml``'s ``capture:`` section.

```yaml
capture:
  max_untracked_size: 4 MiB   # untracked files larger than this are left out of the run's patch
```

Only this one key is read, from the composed YAML nodes (nothing else in the file is constructed),
so a run does not pay for, nor fail on, the sections other modules own.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from labvault.errors import ValidationError
from labvault.safeload import compose_yaml, read_limited
from labvault.services.capture.git import DEFAULT_MAX_UNTRACKED

__all__ = ["max_untracked_size"]

_FILE = "labvault.yaml"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i)?)?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def max_untracked_size(root: Path) -> int:
    """``capture.max_untracked_size`` in bytes (1 MiB when the file or the key is absent)."""
    try:
        data = read_limited(root / _FILE, name=_FILE, hint=f"fix {_FILE}")
    except FileNotFoundError:
        return DEFAULT_MAX_UNTRACKED
    node = compose_yaml(data, name=_FILE, hint=f"fix {_FILE}")
    value = _child(_child(node, "capture"), "max_untracked_size")
    if value is None:
        return DEFAULT_MAX_UNTRACKED
    where = f"{_FILE}:{value.start_mark.line + 1}: capture.max_untracked_size"
    hint = "write a size in bytes, or with a unit: 500 KiB, 4 MiB, 1 GB"
    if not isinstance(value, yaml.ScalarNode):
        raise ValidationError(f"{where}: must be a size", hint=hint)
    m = _SIZE_RE.match(str(value.value))
    if not m:
        raise ValidationError(f"{where}: {value.value!r} is not a size", hint=hint)
    prefix = (m.group(2) or "").lower()
    factor = _BINARY[prefix] if m.group(3) else _UNITS[prefix]
    return int(float(m.group(1)) * factor)


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node  # type: ignore[no-any-return]
    return None
