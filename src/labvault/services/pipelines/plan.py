"""Stage keys, and why: for each stage, up to date / will restore from cache / will run, and the reason.

The plan reads ``labvault.lock``, the hash cache and the environment fingerprint cache; it opens the
database only through ``lookup`` (the stage cache), and only for a stage whose key is not the one the
lock records, so a no-op ``pipeline status`` or ``run`` opens none.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from labvault.errors import ValidationError
from labvault.services.pipelines.fingerprint import describe_change
from labvault.services.pipelines.hashing import HashCache
from labvault.services.pipelines.spec import Pipeline, Stage

__all__ = ["Decision", "Planner", "stage_key"]

State = Literal["up to date", "restore", "run", "frozen"]
#: key -> {path: [hex, kind]} of a cached result, or None
Lookup = Callable[[str], dict[str, Any] | None]


def stage_key(stage: Stage, deps: dict[str, str], env: str | None) -> str:
    """sha256 over the command, the deps' content hashes, the params, the outputs and the environment."""
    doc = {
        "cmd": stage.cmd,
        "deps": dict(sorted(deps.items())),
        "env": env,
        "outs": list(stage.outs),
        "params": stage.params,
        "wdir": stage.wdir,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def short(digest: str | None) -> str:
    return "none" if digest is None else digest[:19] + "…"


def _value(v: Any) -> str:
    return json.dumps(v, default=str) if not isinstance(v, str) else v


@dataclass(slots=True)
class Decision:
    name: str
    state: State
    reasons: list[str] = field(default_factory=list)
    key: str | None = None
    deps: dict[str, str] = field(default_factory=dict)
    #: outputs as they will be after this stage: path -> (sha256:hex, kind); None when unknown (it runs)
    outs: dict[str, tuple[str, str]] | None = None

    def to_json(self) -> dict[str, Any]:
        state = {"restore": "will restore from cache", "run": "will run"}.get(self.state, self.state)
        return {"stage": self.name, "state": state, "reasons": self.reasons, "key": self.key}


class Planner:
    """Decides stages one at a time, in topological order (the runner asks again once upstream ran)."""

    def __init__(
        self,
        pipeline: Pipeline,
        lock: dict[str, dict[str, Any]],
        hashes: HashCache,
        *,
        env: Callable[[], tuple[str, dict[str, Any]]],
        old_env: Callable[[str], dict[str, Any] | None],
        data_dep: Callable[[str], str],
        lookup: Lookup,
        ignore_env: bool = False,
        trees: Callable[[str], dict[str, str] | None] | None = None,
    ) -> None:
        self._trees = trees
        self.pipeline = pipeline
        self.lock = lock
        self.hashes = hashes
        self._env = env
        self._old_env = old_env
        self._data_dep = data_dep
        self._lookup = lookup
        self.ignore_env = ignore_env
        self.decided: dict[str, Decision] = {}

    def env_digest(self, stage: Stage) -> str | None:
        if stage.env_ignore or self.ignore_env:
            return None
        return self._env()[0]

    def dep_hashes(self, stage: Stage) -> tuple[dict[str, str], list[str]]:
        """Current hashes of the deps (as they will be after upstream stages), and what is not known yet."""
        deps: dict[str, str] = {}
        unknown: list[str] = []
        for dep in stage.deps:
            if dep.startswith("data:"):
                deps[dep] = self._data_dep(dep)
                continue
            owner = self.pipeline.owner_of(dep)
            if owner is None:
                for out_owner in self.pipeline.owners_below(dep):
                    up = self.decided.get(out_owner)
                    if up is not None and up.outs is None:
                        unknown.append(f"upstream stage {out_owner} will run")
            else:
                up = self.decided.get(owner)
                if up is not None and up.outs is None:
                    unknown.append(f"upstream stage {owner} will run")
                    continue
                if up is not None and up.state == "restore" and up.outs is not None and dep in up.outs:
                    deps[dep] = up.outs[dep][0]
                    continue
            digest = self.hashes.digest(dep)
            if digest is None:
                if owner is not None:
                    if owner not in self.decided:  # upstream not selected and its output is missing
                        unknown.append(f"dep {dep} is missing (run stage {owner})")
                    else:
                        unknown.append(f"dep {dep} is missing")
                    continue
                raise ValidationError(
                    f"stage {stage.name}: dep {dep} does not exist and no stage makes it",
                    hint=f"create {dep}, or add the stage that writes it to labvault.yaml",
                )
            deps[dep] = digest
        return deps, unknown

    def decide(self, name: str, *, force: bool = False) -> Decision:
        stage = self.pipeline.stages[name]
        entry = self.lock.get(name)
        deps, unknown = self.dep_hashes(stage)
        if unknown:
            return self._set(Decision(name, "run", sorted(set(unknown)), None, deps))
        env = self.env_digest(stage)
        key = stage_key(stage, deps, env)
        if stage.frozen and entry is not None:
            return self._frozen(stage, entry, deps)
        if force:
            return self._set(Decision(name, "run", ["forced (--force)"], key, deps))
        current = self._current_outs(stage)
        if entry is not None and entry["key"] == key and not stage.always_changed:
            recorded = _recorded_outs(entry)
            changed = [p for p in stage.outs if current.get(p, (None, ""))[0] != recorded.get(p, (None, ""))[0]]
            if not changed:
                return self._set(Decision(name, "up to date", [], key, deps, recorded))
            why = [f"output {p} is missing" if current.get(p) is None else f"output {p} was modified" for p in changed]
            if all(p in recorded for p in stage.outs):
                return self._set(Decision(name, "restore", why, key, deps, recorded))
            return self._set(Decision(name, "run", why, key, deps))
        reasons = self.explain(stage, entry, deps, env) if entry is not None else ["never run"]
        if stage.always_changed:
            reasons = ["always_changed: runs every time"]
            return self._set(Decision(name, "run", reasons, key, deps))
        cached = self._lookup(key)
        if cached is not None:
            outs = {p: ("sha256:" + v[0], v[1]) for p, v in cached.items()}
            if set(outs) == set(stage.outs):
                return self._set(Decision(name, "restore", reasons, key, deps, outs))
        return self._set(Decision(name, "run", reasons, key, deps))

    def _tree_change(self, old: str, new: str) -> str | None:
        """``3 files modified, 1 added`` between two folder trees, when both are in the object store."""
        if self._trees is None:
            return None
        a, b = self._trees(old), self._trees(new)
        if a is None or b is None:
            return None
        counts = (
            ("modified", sum(1 for p in a if p in b and a[p] != b[p])),
            ("added", sum(1 for p in b if p not in a)),
            ("removed", sum(1 for p in a if p not in b)),
        )
        parts = [
            f"{n} {'file' if n == 1 else 'files'} {what}" if i == 0 else f"{n} {what}"
            for i, (what, n) in enumerate(counts)
            if n
        ]
        return ", ".join(parts) or None

    def _frozen(self, stage: Stage, entry: dict[str, Any], deps: dict[str, str]) -> Decision:
        recorded = _recorded_outs(entry)
        current = self._current_outs(stage)
        missing = [p for p in stage.outs if current.get(p, (None, ""))[0] != recorded.get(p, (None, ""))[0]]
        if missing and all(p in recorded for p in stage.outs):
            return self._set(
                Decision(
                    stage.name,
                    "restore",
                    [f"frozen; output {p} differs" for p in missing],
                    entry["key"],
                    deps,
                    recorded,
                )
            )
        return self._set(Decision(stage.name, "frozen", ["frozen: not checked"], entry["key"], deps, recorded))

    def _current_outs(self, stage: Stage) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        for path in stage.outs:
            digest = self.hashes.digest(path)
            if digest is not None:
                kind = "dir" if (self.hashes.root / path).is_dir() else "file"
                out[path] = (digest, kind)
        return out

    def _set(self, decision: Decision) -> Decision:
        self.decided[decision.name] = decision
        return decision

    def explain(self, stage: Stage, entry: dict[str, Any], deps: dict[str, str], env: str | None) -> list[str]:
        reasons: list[str] = []
        if entry["cmd"] != stage.cmd:
            reasons.append(f"command changed: {entry['cmd']!r} -> {stage.cmd!r}")
        old_deps: dict[str, str] = entry["deps"]
        for path in sorted(set(old_deps) | set(deps)):
            a, b = old_deps.get(path), deps.get(path)
            if a == b:
                continue
            if a is None:
                reasons.append(f"new dep {path}")
            elif b is None:
                reasons.append(f"dep {path} removed")
            else:
                detail = self._tree_change(a, b) if self._trees is not None else None
                reasons.append(f"dep {path} changed: {short(a)} -> {short(b)}" + (f", {detail}" if detail else ""))
        old_params: dict[str, Any] = entry["params"]
        for k in sorted(set(old_params) | set(stage.params)):
            shown = k.split(":", 1)[1] if k.startswith("params.yaml:") else k
            if k not in old_params:
                reasons.append(f"new param {shown} = {_value(stage.params[k])}")
            elif k not in stage.params:
                reasons.append(f"param {shown} removed")
            elif old_params[k] != stage.params[k]:
                for leaf, a, b in _leaf_changes(shown, old_params[k], stage.params[k]):
                    reasons.append(f"param {leaf} {a} -> {b}")
        if list(entry["outs"]) != sorted(stage.outs) and set(entry["outs"]) != set(stage.outs):
            reasons.append(f"outputs changed: {sorted(entry['outs'])} -> {sorted(stage.outs)}")
        if entry.get("env") != env:
            if env is None:
                reasons.append("environment no longer part of the key (env: ignore)")
            elif entry.get("env") is None:
                reasons.append("environment now part of the key")
            else:
                reasons.append("environment: " + describe_change(self._old_env(entry["env"]), self._env()[1]))
        if entry.get("wdir", stage.wdir) != stage.wdir:
            reasons.append(f"wdir changed: {entry.get('wdir')} -> {stage.wdir}")
        return reasons or ["the stage key changed"]


def _leaf_changes(prefix: str, a: Any, b: Any) -> list[tuple[str, str, str]]:
    """``train`` {lr: 0.1} -> {lr: 0.05} is ``("train.lr", "0.1", "0.05")``: a section is compared key by key."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, str, str]] = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a:
                out.append((f"{prefix}.{k}", "(none)", _value(b[k])))
            elif k not in b:
                out.append((f"{prefix}.{k}", _value(a[k]), "(none)"))
            elif a[k] != b[k]:
                out += _leaf_changes(f"{prefix}.{k}", a[k], b[k])
        return out
    return [(prefix, _value(a), _value(b))]


def _recorded_outs(entry: dict[str, Any]) -> dict[str, tuple[str, str]]:
    trees = set(entry.get("trees") or [])
    return {p: (d, "dir" if p in trees else "file") for p, d in entry["outs"].items() if d is not None}
