"""DVC's templating, as ``dvc.yaml`` uses it: ``vars``, ``${...}`` interpolation, ``foreach`` and ``matrix``.

The context is ``params.yaml`` beside ``dvc.yaml`` (DVC reads it by default), then every ``vars:`` entry
in order: a mapping of values, or a file (``custom.yaml``, ``custom.yaml:key1,key2``). A reference is
``${a.b}`` or ``${a.list[0]}``; a string that is one reference keeps the value's type (a list of deps
stays a list), one reference inside text becomes text (booleans as ``true``/``false``), and ``\\${``
is a literal ``${``. An undefined reference is an error naming the stage, never left in silently.

Everything here reads untrusted input, so the work is bounded: at most :data:`MAX_STAGES` stages
after expansion, and at most :data:`MAX_OUTPUT_CHARS` characters produced by interpolation in all.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from labvault.errors import ValidationError
from labvault.safeload import load_yaml

__all__ = ["MAX_OUTPUT_CHARS", "MAX_STAGES", "Interpolator", "expand_foreach", "expand_matrix", "load_vars"]

MAX_STAGES = 10_000
MAX_OUTPUT_CHARS = 50_000_000

# One unambiguous pattern (the spaces are stripped after matching): a lazy group between two
# optional-space runs backtracks cubically on a long unclosed "${   ...", which a dvc.yaml may hold.
_REF = re.compile(r"(\\)?\$\{([^${}]*)\}")
_SYNTAX = re.compile(r"[^.\[\]\s]+(?:\.[^.\[\]\s]+|\[\d+\])*")
_LABEL = re.compile(r"[A-Za-z0-9_.+\-]{1,100}")
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_HINT = "fix dvc.yaml (see https://dvc.org/doc/user-guide/project-structure/dvcyaml-files#templating)"


def _lookup(ctx: Mapping[str, Any], ref: str, where: str) -> Any:
    if not _SYNTAX.fullmatch(ref):
        raise ValidationError(f"dvc.yaml: {where}: ${{{ref}}} is not a reference labvault can read", hint=_HINT)
    value: Any = ctx
    for m in _PART.finditer(ref):
        key, index = m.group(1), m.group(2)
        if key is not None and isinstance(value, Mapping) and key in value:
            value = value[key]
        elif index is not None and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            raise ValidationError(f"dvc.yaml: {where}: ${{{ref}}} is not defined", hint=_HINT)
    return value


def _as_text(value: Any, ref: str, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "None"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValidationError(
        f"dvc.yaml: {where}: ${{{ref}}} is a {type(value).__name__}, which cannot be put inside text",
        hint="only a string that is a single reference may hold a list or a mapping",
    )


class Interpolator:
    """Resolves ``${...}`` in a stage body; ``keep`` names references left as written (``item`` of a matrix)."""

    def __init__(self) -> None:
        self.produced = 0

    def _count(self, n: int) -> None:
        self.produced += n
        if self.produced > MAX_OUTPUT_CHARS:
            raise ValidationError(
                f"dvc.yaml: interpolation produces more than {MAX_OUTPUT_CHARS:,} characters (a template bomb?)",
                hint=_HINT,
            )

    def resolve(self, value: Any, ctx: Mapping[str, Any], where: str, *, keep: frozenset[str] = frozenset()) -> Any:
        if isinstance(value, str):
            return self._string(value, ctx, where, keep)
        if isinstance(value, list):
            return [self.resolve(v, ctx, where, keep=keep) for v in value]
        if isinstance(value, dict):
            return {
                self._string(k, ctx, where, keep) if isinstance(k, str) else k: self.resolve(v, ctx, where, keep=keep)
                for k, v in value.items()
            }
        return value

    def _string(self, text: str, ctx: Mapping[str, Any], where: str, keep: frozenset[str]) -> Any:
        if "${" not in text:
            return text
        whole = _REF.fullmatch(text)
        if whole and not whole.group(1) and _root(whole.group(2).strip()) not in keep:
            value = _lookup(ctx, whole.group(2).strip(), where)
            self._count(len(str(value)) if isinstance(value, str) else 1)
            return value

        def sub(m: re.Match[str]) -> str:
            if m.group(1):  # \${...} is a literal ${...}
                return m.group(0)[1:]
            ref = m.group(2).strip()
            if _root(ref) in keep:
                return m.group(0)
            out = _as_text(_lookup(ctx, ref, where), ref, where)
            self._count(len(out))
            return out

        result = _REF.sub(sub, text)
        self._count(len(result))
        return result


def _root(ref: str) -> str:
    return re.split(r"[.\[]", ref, maxsplit=1)[0]


def load_vars(entries: Any, base: Path, ctx: dict[str, Any], where: str, read: Callable[[Path], Any]) -> None:
    """Merge ``vars:`` entries into ``ctx``: mappings as written, files (``f.yaml[:k1,k2]``) from ``base``."""
    if entries is None:
        return
    if not isinstance(entries, list):
        raise ValidationError(f"dvc.yaml: {where}: vars must be a list, not {type(entries).__name__}", hint=_HINT)
    for entry in entries:
        if isinstance(entry, dict):
            ctx.update(entry)
            continue
        if not isinstance(entry, str) or not entry:
            raise ValidationError(f"dvc.yaml: {where}: a vars entry must be a mapping or a file name", hint=_HINT)
        name, _, keys = entry.partition(":")
        doc = read(base / name)
        if not isinstance(doc, dict):
            raise ValidationError(f"{name}: must hold a mapping of values (named in {where} vars)", hint=_HINT)
        if keys:
            for key in keys.split(","):
                key = key.strip()
                if key not in doc:
                    raise ValidationError(f"{name}: has no key {key!r} (named in {where} vars)", hint=_HINT)
                ctx[key] = doc[key]
        else:
            ctx.update(doc)


def read_vars_file(path: Path) -> Any:
    try:
        return load_yaml(path, name=path.name, hint=_HINT)
    except FileNotFoundError:
        raise ValidationError(f"dvc.yaml: vars file {path.name} does not exist", hint=_HINT) from None


def _is_label(value: Any) -> bool:
    """Whether a foreach/matrix value can name its stage (``train@us``); else stages are named by index.

    DVC names them by the value; a value such as ``data/a.csv`` cannot be part of a stage name here.
    """
    return isinstance(value, str | int | float | bool) and bool(_LABEL.fullmatch(str(value)))


def _check_count(n: int, name: str) -> None:
    if n > MAX_STAGES:
        raise ValidationError(f"dvc.yaml: stage {name} expands to more than {MAX_STAGES:,} stages", hint=_HINT)


def expand_foreach(
    name: str, foreach: Any, ctx: Mapping[str, Any], interp: Interpolator
) -> list[tuple[str, dict[str, Any]]]:
    """``[(stage@key, extra context)]`` for DVC's ``foreach``: a list (of scalars or mappings) or a mapping."""
    where = f"stage {name}"
    items = interp.resolve(foreach, ctx, where)
    if isinstance(items, dict):
        _check_count(len(items), name)
        return [(f"{name}@{k}", {"key": k, "item": v}) for k, v in items.items()]
    if isinstance(items, list):
        if not items:
            raise ValidationError(f"dvc.yaml: stage {name}: foreach is an empty list", hint="give it at least one item")
        _check_count(len(items), name)
        named = all(_is_label(v) for v in items)
        return [(f"{name}@{v if named else i}", {"item": v}) for i, v in enumerate(items)]
    raise ValidationError(f"dvc.yaml: stage {name}: foreach must be a list or a mapping", hint=_HINT)


def resolve_matrix(name: str, matrix: Any, ctx: Mapping[str, Any], interp: Interpolator) -> dict[str, list[Any]]:
    where = f"stage {name}"
    if not isinstance(matrix, dict) or not matrix:
        raise ValidationError(f"dvc.yaml: stage {name}: matrix must be a non-empty mapping of lists", hint=_HINT)
    out: dict[str, list[Any]] = {}
    total = 1
    for key, values in matrix.items():
        values = interp.resolve(values, ctx, where)
        if not isinstance(key, str) or not isinstance(values, list):
            raise ValidationError(f"dvc.yaml: stage {name}: matrix.{key} must be a list", hint=_HINT)
        if not values:
            raise ValidationError(f"dvc.yaml: stage {name}: matrix.{key} is an empty list", hint="give it a value")
        total *= len(values)
        _check_count(total, name)
        out[key] = values
    return out


def expand_matrix(name: str, matrix: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``[(stage@a-b, {"item": {...}})]`` as DVC names them (a non-scalar value by its index)."""
    keys = list(matrix)
    labelled = [
        [(str(v) if all(_is_label(x) for x in matrix[k]) else f"{k}{i}", v) for i, v in enumerate(matrix[k])]
        for k in keys
    ]
    out = []
    for combo in itertools.product(*labelled):
        label = "-".join(lbl for lbl, _ in combo)
        out.append((f"{name}@{label}", {"item": dict(zip(keys, (v for _, v in combo), strict=True))}))
    return out
