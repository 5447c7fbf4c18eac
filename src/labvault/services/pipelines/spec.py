"""The pipeline definition: ``stages:`` in ``labvault.yaml``, resolved into concrete stages.

Read through :mod:`labvault.safeload` and validated with pydantic (this is an edge); errors name the
file, the line and the key (``labvault.yaml:12: stages.train.deps: ...``). Resolution expands
``matrix:`` (``evaluate@val``), interpolates ``${item.x}``, makes every path project-relative (``wdir``
applies, as in DVC) and reads the param values. The graph comes from outs -> deps.

:mod:`labvault.services.pipelines.speccache` keeps the resolved stages keyed on the stat of the files
read, so that a no-op ``pipeline status`` imports neither PyYAML nor pydantic.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvault.errors import ValidationError
from labvault.safeload import compose_yaml, construct_yaml, load_yaml, read_limited
from labvault.services.pipelines.dag import build_graph, output_indexes
from labvault.storage.contained_paths import check_name

__all__ = ["PIPELINE_FILE", "Pipeline", "Stage", "load_pipeline", "lookup_param"]

PIPELINE_FILE = "labvault.yaml"
DEFAULT_PARAMS = "params.yaml"
_HINT = "fix labvault.yaml (see docs/pipelines.md)"
_ITEM = re.compile(r"\$\{\s*item\.([A-Za-z_][A-Za-z0-9_]*)\s*\}")
_MAX_STAGES = 100_000


@dataclass(frozen=True, slots=True)
class Stage:
    """One concrete stage (a matrix stage is one ``Stage`` per value)."""

    name: str
    cmd: str
    wdir: str = "."
    deps: tuple[str, ...] = ()  # project-relative POSIX paths, or data:NAME[@vN]
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # "file:key" -> value
    frozen: bool = False
    always_changed: bool = False
    env_ignore: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cmd": self.cmd,
            "wdir": self.wdir,
            "deps": list(self.deps),
            "outs": list(self.outs),
            "metrics": list(self.metrics),
            "params": self.params,
            "frozen": self.frozen,
            "always_changed": self.always_changed,
            "env_ignore": self.env_ignore,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Stage:
        return cls(
            name=str(doc["name"]),
            cmd=str(doc["cmd"]),
            wdir=str(doc["wdir"]),
            deps=tuple(str(d) for d in doc["deps"]),
            outs=tuple(str(o) for o in doc["outs"]),
            metrics=tuple(str(m) for m in doc["metrics"]),
            params=dict(doc["params"]),
            frozen=bool(doc["frozen"]),
            always_changed=bool(doc["always_changed"]),
            env_ignore=bool(doc["env_ignore"]),
        )


@dataclass(slots=True)
class Pipeline:
    """The resolved stages in definition order, and the graph between them."""

    stages: dict[str, Stage]
    upstream: dict[str, tuple[str, ...]]  # stage -> stages whose outputs it reads
    files: tuple[str, ...] = ()  # the files read to build it (labvault.yaml, params files)
    _index: tuple[dict[str, str], dict[str, list[str]]] | None = None

    def downstream(self) -> dict[str, list[str]]:
        down: dict[str, list[str]] = {n: [] for n in self.stages}
        for name, ups in self.upstream.items():
            for up in ups:
                down[up].append(name)
        return down

    def order(self) -> list[str]:
        """Topological order, stable in definition order."""
        done: set[str] = set()
        out: list[str] = []
        for name in self.stages:
            stack = [(name, iter(self.upstream[name]))]
            if name in done:
                continue
            while stack:
                node, it = stack[-1]
                nxt = next((u for u in it if u not in done), None)
                if nxt is None:
                    stack.pop()
                    if node not in done:
                        done.add(node)
                        out.append(node)
                else:
                    stack.append((nxt, iter(self.upstream[nxt])))
        return out

    def owner_of(self, path: str) -> str | None:
        """The stage whose output is ``path`` or holds it."""
        owners = self._indexes()[0]
        probe = path
        while probe:
            if probe in owners:
                return owners[probe]
            probe = probe.rpartition("/")[0]
        return None

    def owners_below(self, path: str) -> list[str]:
        """The stages with an output strictly inside the folder ``path``."""
        return self._indexes()[1].get(path, [])

    def _indexes(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        if self._index is None:
            self._index = output_indexes(self.stages)
        return self._index


# -- reading ----------------------------------------------------------------------------------
def _lines_of(node: Any) -> dict[tuple[str, ...], int]:
    """Line numbers of ``stages``, each stage and each key of a stage (enough to name any error)."""
    import yaml

    lines: dict[tuple[str, ...], int] = {}
    if not isinstance(node, yaml.MappingNode):
        return lines
    for k, v in node.value:
        key = str(k.value)
        lines[(key,)] = k.start_mark.line + 1
        if key != "stages" or not isinstance(v, yaml.MappingNode):
            continue
        for sk, sv in v.value:
            lines[("stages", str(sk.value))] = sk.start_mark.line + 1
            if isinstance(sv, yaml.MappingNode):
                for fk, _fv in sv.value:
                    lines[("stages", str(sk.value), str(fk.value))] = fk.start_mark.line + 1
    return lines


def _where(lines: dict[tuple[str, ...], int], *path: str) -> str:
    p: tuple[str, ...] = tuple(path)
    while p and p not in lines:
        p = p[:-1]
    return f"{PIPELINE_FILE}:{lines.get(p, 1)}: {'.'.join(path)}"


def load_pipeline(root: Path) -> Pipeline:
    """Read, validate and resolve ``ROOT/labvault.yaml``'s stages; a file without ``stages:`` has none."""
    path = root / PIPELINE_FILE
    try:
        data = read_limited(path, name=PIPELINE_FILE, hint=_HINT)
    except FileNotFoundError:
        raise ValidationError(
            f"{path} does not exist, so there are no stages", hint="define stages under `stages:` in labvault.yaml"
        ) from None
    node = compose_yaml(data, name=PIPELINE_FILE, hint=_HINT)
    doc = construct_yaml(node, name=PIPELINE_FILE, hint=_HINT) if node is not None else None
    lines = _lines_of(node)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValidationError(f"{PIPELINE_FILE}:1: the file must be a mapping of sections (stages:, ...)", hint=_HINT)
    raw = doc.get("stages") or {}
    if not isinstance(raw, dict):
        raise ValidationError(f"{_where(lines, 'stages')}: must be a mapping of stage name -> stage", hint=_HINT)
    default_params = doc.get("params", DEFAULT_PARAMS)
    if not isinstance(default_params, str):
        raise ValidationError(f"{_where(lines, 'params')}: must be a file name", hint=_HINT)
    from labvault.services.pipelines.model import validate_stage

    params = _ParamFiles(root, default_params)
    stages: dict[str, Stage] = {}
    for name, body in raw.items():
        _check_stage_name(str(name), lines)
        model = validate_stage(body, where=lambda *keys, n=str(name): _where(lines, "stages", n, *keys), hint=_HINT)
        for stage in _expand(str(name), model, lines, params):
            if stage.name in stages:
                raise ValidationError(f"{_where(lines, 'stages', str(name))}: stage {stage.name} is defined twice")
            stages[stage.name] = stage
            if len(stages) > _MAX_STAGES:
                raise ValidationError(f"{PIPELINE_FILE}: more than {_MAX_STAGES} stages", hint=_HINT)
    pipeline = Pipeline(stages, build_graph(stages), files=(PIPELINE_FILE, *sorted(params.read)))
    return pipeline


def _check_stage_name(name: str, lines: dict[tuple[str, ...], int]) -> None:
    if not name or len(name) > 200 or "@" in name or check_name(name) is not None or name.strip() != name:
        raise ValidationError(
            f"{_where(lines, 'stages', name)}: {name!r} is not a valid stage name",
            hint="name stages with letters, digits, '-', '_' and '.' ('@' is kept for matrix values)",
        )


def _expand(name: str, model: Any, lines: dict[tuple[str, ...], int], params: _ParamFiles) -> Iterable[Stage]:
    matrix: dict[str, list[Any]] | None = model.matrix
    if not matrix:
        yield _resolve(name, model, {}, lines, params, name)
        return
    for key, values in matrix.items():
        if not values:
            raise ValidationError(
                f"{_where(lines, 'stages', name, 'matrix')}.{key}: the list is empty, so the stage would never run",
                hint="give at least one value, or remove the matrix",
            )
    keys = list(matrix)
    for combo in itertools.product(*(matrix[k] for k in keys)):
        item = dict(zip(keys, combo, strict=True))
        suffix = "-".join(_scalar_text(v) for v in combo)
        yield _resolve(f"{name}@{suffix}", model, item, lines, params, name)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _interpolate(text: str, item: dict[str, Any], where: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in item:
            raise ValidationError(
                f"{where}: ${{item.{m.group(1)}}} names no matrix key (have: {', '.join(item) or 'none'})",
                hint="use a key of the stage's matrix:",
            )
        return _scalar_text(item[m.group(1)])

    return _ITEM.sub(sub, text)


def _rel(path: str, wdir: str, where: str) -> str:
    if path.startswith("data:"):
        return path
    joined = posixpath.normpath(posixpath.join(wdir, path))
    if path.startswith("/") or joined == ".." or joined.startswith("../") or joined == ".":
        raise ValidationError(f"{where}: {path!r} is outside the project", hint="name paths inside the project folder")
    for part in joined.split("/"):
        why = check_name(part)
        if why is not None:
            raise ValidationError(f"{where}: {path!r} holds {why}", hint="name plain paths inside the project")
    return joined


def _resolve(
    name: str, model: Any, item: dict[str, Any], lines: dict[tuple[str, ...], int], params: _ParamFiles, base: str
) -> Stage:
    def at(key: str) -> str:
        return _where(lines, "stages", base, key)

    cmd = model.cmd if isinstance(model.cmd, str) else " && ".join(model.cmd)
    cmd = _interpolate(cmd, item, at("cmd"))
    wdir_text = _interpolate(model.wdir, item, at("wdir"))
    wdir = "." if wdir_text in (".", "") else _rel(wdir_text, ".", at("wdir"))
    deps = tuple(dict.fromkeys(_rel(_interpolate(d, item, at("deps")), wdir, at("deps")) for d in model.deps))
    outs = tuple(dict.fromkeys(_rel(_interpolate(o, item, at("outs")), wdir, at("outs")) for o in model.outs))
    metrics = tuple(_rel(_interpolate(m, item, at("metrics")), wdir, at("metrics")) for m in model.metrics)
    values: dict[str, Any] = {}
    for entry in model.params:
        specs: list[tuple[str | None, str]] = []
        if isinstance(entry, dict):
            for file, keys in entry.items():
                specs += [(file, k) for k in keys]
        else:
            text = _interpolate(entry, item, at("params"))
            file, sep, key = text.rpartition(":")
            specs.append((file if sep else None, key))
        for file, key in specs:
            shown, value = params.value(file, key, at("params"), name)
            values[f"{shown}:{key}"] = value
    return Stage(
        name=name,
        cmd=cmd,
        wdir=wdir,
        deps=deps,
        outs=outs,
        metrics=metrics,
        params=dict(sorted(values.items())),
        frozen=model.frozen,
        always_changed=model.always_changed,
        env_ignore=model.env == "ignore",
    )


def lookup_param(doc: Any, key: str) -> tuple[bool, Any]:
    """``(found, value)`` of a dotted key (``train.lr``) in a params document."""
    node = doc
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


class _ParamFiles:
    """Params files, each read once (through the safe loader)."""

    def __init__(self, root: Path, default: str) -> None:
        self.root = root
        self.default = default
        self.docs: dict[str, Any] = {}
        self.read: set[str] = set()

    def value(self, file: str | None, key: str, where: str, stage: str) -> tuple[str, Any]:
        shown = _rel(file or self.default, ".", where)
        if shown not in self.docs:
            try:
                self.docs[shown] = load_yaml(self.root / shown, name=shown, hint=_HINT)
            except FileNotFoundError:
                raise ValidationError(
                    f"{where}: stage {stage} reads params from {shown}, which does not exist",
                    hint=f"create {shown}, or name another file as FILE:KEY",
                ) from None
            self.read.add(shown)
        found, value = lookup_param(self.docs[shown], key)
        if not found or not key:
            raise ValidationError(
                f"{where}: stage {stage}: param {key!r} is missing from {shown}",
                hint=f"add {key} to {shown}, or remove it from the stage's params",
            )
        return shown, value
