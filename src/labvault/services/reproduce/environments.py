"""``labvault env``: a run's recorded environment shown, compared with another (or this machine's),
and exported as something that rebuilds it (requirements, a uv project, conda, a Dockerfile)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from labvault.errors import NotFound, ValidationError
from labvault.refs import Digest
from labvault.services.capture.environment import environment_summary
from labvault.services.reproduce.envbuild import requirements
from labvault.services.reproduce.environment import current_environment, environment_drift, load_environment
from labvault.services.tracking.service import Tracking

__all__ = ["EXPORT_FORMATS", "Environments"]

EXPORT_FORMATS = ("requirements", "uv", "conda", "dockerfile")


class Environments:
    """The recorded environments of runs (``vault.environments``)."""

    def __init__(self, *, runs: Tracking, root: Path) -> None:
        self.runs = runs
        self.root = root

    def get(self, ref: str) -> dict[str, Any]:
        """The environment document a run recorded; ``current`` is this process's."""
        if ref == "current":
            return current_environment(self.root)
        run = self.runs.get(ref)
        digest = run.capture.get("environment")
        doc = None
        if isinstance(digest, str):
            doc = load_environment(self.runs.objects, Digest(digest.removeprefix("sha256:")))
        if doc is None:
            raise NotFound(f"{run.ref} recorded no readable environment", hint="run `labvault fsck` to check objects")
        return doc

    def show(self, ref: str) -> dict[str, Any]:
        doc = self.get(ref)
        return {
            **environment_summary(doc),
            "packages": [
                {k: p.get(k) for k in ("name", "version", "source") if p.get(k) is not None}
                for p in doc.get("packages") or []
            ],
        }

    def diff(self, a: str, b: str = "current") -> dict[str, Any]:
        """Python, packages added/removed/changed, and OS, CPU, GPU and container when they differ."""
        doc_a, doc_b = self.get(a), self.get(b)
        drift = environment_drift(doc_a, doc_b)
        sum_a, sum_b = environment_summary(doc_a), environment_summary(doc_b)
        keys = ("os", "distribution", "cpu", "cpu_count", "gpus", "gpu_driver", "cuda", "container")
        return {
            "a": a,
            "b": b,
            "python": list(drift.python) if drift.python else None,
            "added": list(drift.added),
            "removed": list(drift.removed),
            "changed": [{"name": n, "a": x, "b": y} for n, x, y in drift.changed],
            "system": {k: [sum_a.get(k), sum_b.get(k)] for k in keys if sum_a.get(k) != sum_b.get(k)},
        }

    def export(self, ref: str, *, format: str) -> str:
        if format not in EXPORT_FORMATS:
            raise ValidationError(f"unknown format {format!r}", hint=f"choose one of {', '.join(EXPORT_FORMATS)}")
        doc = self.get(ref)
        python = str((doc.get("python") or {}).get("version", ""))
        if not python:
            raise ValidationError(f"{ref} recorded no Python version", hint="it cannot be exported")
        lines, skipped = requirements(doc)
        render: dict[str, Callable[[], str]] = {
            "requirements": lambda: _requirements(ref, python, lines, skipped),
            "uv": lambda: _uv_project(python, lines),
            "conda": lambda: _conda(python, lines),
            "dockerfile": lambda: _dockerfile(ref, python, lines),
        }
        return render[format]()


def _requirements(ref: str, python: str, lines: list[str], skipped: list[str]) -> str:
    head = [f"# The environment of {ref}: Python {python}", "# uv pip install --no-deps -r requirements.txt"]
    head += [f"# not included (editable): {s}" for s in skipped]
    return "\n".join([*head, *lines]) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uv_project(python: str, lines: list[str]) -> str:
    minor = ".".join(python.split(".")[:2])
    deps = "".join(f"  {_quote(r)},\n" for r in lines)
    return (
        "[project]\n"
        'name = "reproduced-environment"\n'
        'version = "0"\n'
        f'requires-python = "=={minor}.*"\n'
        f"dependencies = [\n{deps}]\n"
    )


def _conda(python: str, lines: list[str]) -> str:
    pip = "".join(f"      - {r}\n" for r in lines)
    return f"name: reproduced\ndependencies:\n  - python={python}\n  - pip\n  - pip:\n{pip}"


def _dockerfile(ref: str, python: str, lines: list[str]) -> str:
    pins = "".join(f" \\\n    {_shell(r)}" for r in lines)
    return f"# The environment of {ref}\nFROM python:{python}-slim\nRUN pip install --no-cache-dir --no-deps{pins}\n"


def _shell(requirement: str) -> str:
    return "'" + requirement.replace("'", "'\\''") + "'"
