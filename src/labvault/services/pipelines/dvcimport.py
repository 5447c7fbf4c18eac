"""``labvault pipeline import dvc.yaml``: DVC's stages as ``labvault.yaml`` ``stages:``.

Translated natively: ``cmd`` (a list of commands joined with ``&&``, as DVC runs them), ``deps``,
``params`` (keys of ``params.yaml`` as written, keys of another file as ``file.yaml:key``, a whole
file as its top-level keys), ``outs``, ``metrics``, ``plots`` (as ``artifacts``), ``wdir``, ``frozen``
and ``always_changed``; ``vars`` and ``${...}`` are resolved, ``foreach`` is expanded into
``stage@key`` stages and ``matrix`` is kept as ``matrix:`` (or expanded, with ``expand_matrix``).

Whatever has no labvault equivalent (an output's ``cache: false`` or ``persist``, a ``desc``, plot
rendering options, top-level ``plots:``/``metrics:``/``artifacts:``, ``dvc.lock``, data tracked by
``.dvc`` files) is listed in :attr:`DvcImport.untranslated`, never dropped silently.

``dvc.yaml`` comes from someone else: it is read through :mod:`labvault.safeload` (bounded), every
value's type is checked (a bad one is a ``ValidationError``, exit 2, naming the stage and key), and
``labvault.yaml`` is rewritten whole through the contained-write helper, or not at all.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labvault.config import find_vault_dir
from labvault.errors import Conflict, NotFound, ValidationError, VaultNotFound
from labvault.safeload import compose_yaml, construct_yaml, load_yaml, read_limited
from labvault.services.pipelines.dvcinterp import (
    MAX_STAGES,
    Interpolator,
    expand_foreach,
    expand_matrix,
    load_vars,
    read_vars_file,
    resolve_matrix,
)
from labvault.storage.contained import write_text

__all__ = ["DvcImport", "import_dvc", "project_root", "render_stages", "write_stages"]

PROJECT_FILE = "labvault.yaml"
_HINT = "fix dvc.yaml (see https://dvc.org/doc/user-guide/project-structure/dvcyaml-files)"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(@[^\s/\\:]+)?")
_MAX_NAME = 200
_MARK = "# stages imported from"
_STAGE_KEYS = {"cmd", "deps", "params", "outs", "metrics", "plots", "wdir", "frozen", "always_changed", "vars"}
_TEMPLATE_KEYS = {"foreach", "do", "matrix"}
_OUT_FLAGS_MOOT = {"metrics": {"cache"}, "plots": {"cache"}}  # labvault records these in the run either way


@dataclass(frozen=True, slots=True)
class DvcImport:
    """The ``stages:`` mapping to write into ``labvault.yaml``, and everything that was not translated."""

    stages: dict[str, dict[str, Any]]
    untranslated: list[str] = field(default_factory=list)


def project_root() -> Path:
    """Where ``labvault.yaml`` lives: the vault's project root, or the current folder before ``init``."""
    try:
        return find_vault_dir().parent
    except VaultNotFound:
        return Path.cwd()


def _bad(where: str, what: str) -> ValidationError:
    return ValidationError(f"dvc.yaml: {where}: {what}", hint=_HINT)


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _bad(where, "must be a list of paths")
    return list(value)


class _Translator:
    def __init__(self, dvc_dir: Path, prefix: str, *, keep_matrix: bool) -> None:
        self.dvc_dir = dvc_dir
        self.prefix = prefix  # dvc.yaml's folder, relative to the project root ("" at the root)
        self.keep_matrix = keep_matrix
        self.interp = Interpolator()
        self.notes: list[str] = []
        self.stages: dict[str, dict[str, Any]] = {}

    # -- one stage --------------------------------------------------------------------------------
    def stage(self, name: str, body: Any, ctx: dict[str, Any], *, matrix: dict[str, list[Any]] | None = None) -> None:
        if not isinstance(body, dict):
            raise _bad(f"stage {name}", "must be a mapping")
        if not isinstance(name, str) or len(name) > _MAX_NAME or not _NAME.fullmatch(name):
            raise _bad(f"stage {name!r}", "is not a stage name labvault accepts (letters, digits, _ . -, @item)")
        if name in self.stages:
            raise _bad(f"stage {name}", "is defined twice")
        where = f"stage {name}"
        local = dict(ctx)
        wdir_raw = body.get("wdir", ".")
        if not isinstance(wdir_raw, str):
            raise _bad(f"{where}.wdir", "must be a path")
        load_vars(body.get("vars"), self.dvc_dir / wdir_raw, local, where, read_vars_file)
        keep = frozenset({"item"}) if matrix is not None else frozenset()
        body = self.interp.resolve({k: v for k, v in body.items() if k != "vars"}, local, where, keep=keep)
        out: dict[str, Any] = {}
        if matrix is not None:
            out["matrix"] = matrix
        out["cmd"] = self._cmd(body.get("cmd"), where)
        wdir = self._wdir(body.get("wdir", "."), where)
        if wdir != ".":
            out["wdir"] = wdir
        for key in ("deps",):
            paths = _str_list(body.get(key), f"{where}.{key}")
            if paths:
                out[key] = paths
        params = self._params(body.get("params"), where, wdir)
        if params:
            out["params"] = params
        for key, target in (("outs", "outs"), ("metrics", "metrics"), ("plots", "artifacts")):
            paths = self._outs(body.get(key), f"{where}.{key}", key)
            if paths:
                out[target] = paths
        for key in ("frozen", "always_changed"):
            if key in body:
                if not isinstance(body[key], bool):
                    raise _bad(f"{where}.{key}", "must be true or false")
                if body[key]:
                    out[key] = True
        for key in body:
            if key not in _STAGE_KEYS:
                shown = f"{key}: {_short(body[key])}"
                self.notes.append(f"stage {name}: {shown} (no labvault equivalent)")
        self.stages[name] = out
        if len(self.stages) > MAX_STAGES:
            raise _bad(name, f"more than {MAX_STAGES:,} stages")

    def _cmd(self, cmd: Any, where: str) -> str:
        if isinstance(cmd, str) and cmd.strip():
            return cmd
        if isinstance(cmd, list) and cmd and all(isinstance(c, str) and c.strip() for c in cmd):
            return " && ".join(cmd)  # DVC runs a list one by one and stops at the first failure
        if cmd is None:
            raise _bad(where, "has no cmd")
        raise _bad(f"{where}.cmd", "must be a command or a list of commands")

    def _wdir(self, wdir: Any, where: str) -> str:
        if not isinstance(wdir, str) or not wdir or "\0" in wdir:
            raise _bad(f"{where}.wdir", "must be a path")
        joined = posixpath.normpath(posixpath.join(self.prefix or ".", wdir))
        if posixpath.isabs(wdir) or joined == ".." or joined.startswith("../"):
            raise _bad(f"{where}.wdir", f"{wdir!r} leaves the project")
        return joined

    def _params(self, params: Any, where: str, wdir: str) -> list[str]:
        if params is None:
            return []
        if not isinstance(params, list):
            raise _bad(f"{where}.params", "must be a list")
        out: list[str] = []
        for entry in params:
            if isinstance(entry, str) and entry:
                out.append(entry)
            elif isinstance(entry, dict):
                for file, keys in entry.items():
                    if not isinstance(file, str) or not file:
                        raise _bad(f"{where}.params", "a params file name must be text")
                    if keys is None or keys == []:
                        out.extend(self._whole_file(file, where, wdir))
                        continue
                    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
                        raise _bad(f"{where}.params.{file}", "must be a list of keys")
                    out.extend(keys if file == "params.yaml" else [f"{file}:{k}" for k in keys])
            else:
                raise _bad(f"{where}.params", "an entry must be a key or a mapping {file: [keys]}")
        return out

    def _whole_file(self, file: str, where: str, wdir: str) -> list[str]:
        """DVC tracks a whole params file; labvault names keys: its top-level keys, as they are now."""
        path = Path(self._root_of_wdir(wdir)) / file
        try:
            doc = load_yaml(path, name=file) if not file.endswith(".json") else None
        except (FileNotFoundError, ValidationError):
            doc = None
        if not isinstance(doc, dict) or not doc:
            self.notes.append(f"{where}: params file {file} (whole file) could not be read: list its keys by hand")
            return []
        self.notes.append(f"{where}: params file {file} (whole file) became its top-level keys: new keys need adding")
        prefix = "" if file == "params.yaml" else f"{file}:"
        return [f"{prefix}{k}" for k in doc if isinstance(k, str)]

    def _root_of_wdir(self, wdir: str) -> Path:
        up = self.prefix.count("/") + 1 if self.prefix else 0
        root = self.dvc_dir
        for _ in range(up):
            root = root.parent
        return root / wdir

    def _outs(self, value: Any, where: str, kind: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise _bad(where, "must be a list")
        paths: list[str] = []
        for entry in value:
            if isinstance(entry, str) and entry:
                paths.append(entry)
                continue
            if not isinstance(entry, dict) or len(entry) != 1:
                raise _bad(where, "an entry must be a path or a mapping {path: {flags}}")
            ((path, flags),) = entry.items()
            if not isinstance(path, str) or not path:
                raise _bad(where, "a path must be text")
            if flags is not None and not isinstance(flags, dict):
                raise _bad(f"{where}.{path}", "flags must be a mapping")
            paths.append(path)
            moot = _OUT_FLAGS_MOOT.get(kind, set())
            for flag, setting in (flags or {}).items():
                if flag in moot:
                    continue
                self.notes.append(f"{where}: {path}: {flag}: {_short(setting)} not translated")
        return paths


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def import_dvc(dvc_yaml: Path, *, project_root: Path | None = None, expand: bool = False) -> DvcImport:
    """Translate ``dvc_yaml``; ``project_root`` (default: its folder) is where ``labvault.yaml`` lives.

    ``expand`` expands ``matrix`` stages too (``foreach`` is always expanded, as DVC names them).
    """
    dvc_yaml = Path(dvc_yaml)
    shown = dvc_yaml.name
    try:
        doc = load_yaml(dvc_yaml, name=shown, hint=_HINT)
    except FileNotFoundError:
        raise NotFound(f"{dvc_yaml} does not exist", hint="give the path of a dvc.yaml") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValidationError(f"{shown}: must be a mapping with a stages: section", hint=_HINT)
    dvc_dir = dvc_yaml.resolve().parent
    root = (project_root or dvc_dir).resolve()
    try:
        prefix = dvc_dir.relative_to(root).as_posix()
    except ValueError:
        raise ValidationError(
            f"{dvc_yaml} is outside the project {root}", hint="run the import in the project"
        ) from None
    t = _Translator(dvc_dir, "" if prefix == "." else prefix, keep_matrix=not expand)

    ctx: dict[str, Any] = {}
    if (dvc_dir / "params.yaml").is_file():  # DVC's default templating context
        default = load_yaml(dvc_dir / "params.yaml", name="params.yaml")
        if isinstance(default, dict):
            ctx.update(default)
    load_vars(doc.get("vars"), dvc_dir, ctx, "vars", read_vars_file)

    stages = doc.get("stages") or {}
    if not isinstance(stages, dict):
        raise ValidationError(f"{shown}: stages must be a mapping of stage names", hint=_HINT)
    for name, body in stages.items():
        if not isinstance(name, str):
            raise _bad(f"stage {name!r}", "a stage name must be text")
        _stage(t, name, body, ctx)

    for key in doc:
        if key not in ("stages", "vars"):
            t.notes.append(f"top-level {key}: {_short(doc[key])} (no labvault equivalent)")
    if (dvc_dir / "dvc.lock").is_file():
        t.notes.append("dvc.lock: not imported; the first `labvault pipeline run` computes its own keys")
    for tracked in _dvc_files(dvc_dir):
        rel = tracked.relative_to(root).as_posix()
        t.notes.append(
            f"{rel}: data tracked by DVC; snapshot it with `labvault data add NAME {rel.removesuffix('.dvc')}`"
        )
    return DvcImport(stages=t.stages, untranslated=t.notes)


def _dvc_files(folder: Path, *, limit: int = 100, budget: int = 50_000) -> list[Path]:
    """``*.dvc`` files below ``folder``: hidden folders (``.dvc``, ``.git``, ``.labvault``) are not entered,
    and the walk stops after ``budget`` entries, so a large data folder costs little."""
    found: list[Path] = []
    seen = 0
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        seen += len(dirs) + len(files)
        found.extend(Path(here) / f for f in sorted(files) if f.endswith(".dvc") and not f.startswith("."))
        if len(found) >= limit or seen > budget:
            break
    return found[:limit]


def _stage(t: _Translator, name: str, body: Any, ctx: dict[str, Any]) -> None:
    if not isinstance(body, dict):
        raise _bad(f"stage {name}", "must be a mapping")
    if "foreach" in body:
        if "do" not in body or not isinstance(body["do"], dict):
            raise _bad(f"stage {name}", "foreach needs a do: mapping")
        for extra in set(body) - {"foreach", "do"}:
            t.notes.append(f"stage {name}: {extra} beside foreach/do (DVC ignores it too)")
        for expanded, item_ctx in expand_foreach(name, body["foreach"], ctx, t.interp):
            t.stage(expanded, body["do"], {**ctx, **item_ctx})
        return
    if "matrix" in body:
        matrix = resolve_matrix(name, body["matrix"], ctx, t.interp)
        rest = {k: v for k, v in body.items() if k != "matrix"}
        scalar = all(isinstance(v, str | int | float | bool) for vs in matrix.values() for v in vs)
        if t.keep_matrix and scalar:
            t.stage(name, rest, ctx, matrix=matrix)
            return
        for expanded, item_ctx in expand_matrix(name, matrix):
            t.stage(expanded, rest, {**ctx, **item_ctx})
        return
    if "do" in body:
        raise _bad(f"stage {name}", "do: needs a foreach:")
    t.stage(name, body, ctx)


# -- labvault.yaml ------------------------------------------------------------------------------------
class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Mappings as blocks, lists of plain values on one line (``deps: [a, b]``); libyaml's emitter when present."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(v, str | int | float | bool) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_dict(dumper: yaml.SafeDumper, data: dict[Any, Any]) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=False)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)


def render_stages(stages: dict[str, dict[str, Any]]) -> str:
    """The ``stages:`` block as YAML, in DVC's order, never wrapped."""
    return yaml.dump({"stages": stages}, Dumper=_Dumper, sort_keys=False, width=1_000_000, allow_unicode=True)


def write_stages(project_root: Path, imported: DvcImport, *, force: bool = False, source: str = "dvc.yaml") -> Path:
    """Put ``imported.stages`` into ``labvault.yaml``'s ``stages:``, keeping every other section as written.

    A ``stages:`` that already holds stages is refused (``Conflict``, exit 4) unless ``force``.
    """
    path = project_root / PROJECT_FILE
    hint = f"fix {PROJECT_FILE}"
    try:
        text = read_limited(path, name=PROJECT_FILE, hint=hint).decode("utf-8")
    except FileNotFoundError:
        text = ""
    except UnicodeDecodeError:
        raise ValidationError(f"{PROJECT_FILE}: not UTF-8 text", hint=hint) from None
    node = compose_yaml(text, name=PROJECT_FILE, hint=hint)
    if node is not None and not isinstance(node, yaml.MappingNode):
        raise ValidationError(f"{PROJECT_FILE}: must be a mapping of sections", hint=hint)
    lines = text.splitlines(keepends=True)
    at = len(lines)
    for key_node, value_node in node.value if node is not None else []:
        if not (isinstance(key_node, yaml.ScalarNode) and key_node.value == "stages"):
            continue
        existing = construct_yaml(value_node, name=PROJECT_FILE, hint=hint)
        if existing and not force:
            names = ", ".join(list(existing)[:5]) if isinstance(existing, dict) else "..."
            raise Conflict(
                f"{PROJECT_FILE} already has stages ({names})",
                hint="pass --force to replace them with the imported ones",
            )
        at = key_node.start_mark.line
        end = value_node.end_mark.line + (1 if value_node.end_mark.column else 0)
        if at and lines[at - 1].startswith(_MARK):  # the previous import's own comment goes with it
            at -= 1
        del lines[at:end]
        break
    if lines[:at] and not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    block = f"{_MARK} {source} by `labvault pipeline import`\n" + render_stages(imported.stages)
    lines.insert(at, block)
    new = "".join(lines)
    compose_yaml(new, name=PROJECT_FILE, hint=hint)  # what is written must read back
    write_text(path, new, durable=True)
    return path
