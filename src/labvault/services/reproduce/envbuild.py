"""``--env rebuild``: a uv virtual environment of the recorded Python and package pins.

The Python is one of the recorded major.minor found on this machine (uv's interpreter downloads are
never used). Every recorded distribution is installed at its recorded version without resolving
anything else (``--no-deps``: the record is the complete set); VCS and URL sources as recorded.
labvault itself is never installed by name from an index (the name there may be someone else's): the
running copy's package is copied in, so that scripts that ``import labvault`` work. Editable
installs are not installed (their folder was the user's checkout) and are listed.

Environments are cached by the environment object's hash (``envs/<hash>``: under the vault, or the
user's cache folder when the vault is reached through a server), built
in place under a lock and marked complete last, so a build that was interrupted is redone and the
second reproduction of the same environment does not rebuild.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labvault.errors import ExternalError
from labvault.refs import Digest
from labvault.services.reproduce.files import copy_tree, remove_tree, write_whole
from labvault.storage.locks import file_lock

__all__ = ["BuiltEnvironment", "EnvironmentUnavailable", "build_environment", "requirements"]

_MARKER = ".labvault-env.json"
_TIMEOUT = 1800
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FAILED_RE = re.compile(r"no (?:version|versions) of ([A-Za-z0-9][A-Za-z0-9._-]*)|\b([A-Za-z0-9][A-Za-z0-9._-]*)==\S+ ")
_SAFE_RE = re.compile(r"^[^\s#;'\"\\]+$")  # one token: no spaces, newlines, comments or quotes
_LABVAULT = Path(__file__).resolve().parents[2]  # the running copy's package folder


@dataclass(frozen=True, slots=True)
class BuiltEnvironment:
    folder: Path
    python: Path
    cached: bool
    skipped: tuple[str, ...]  # editable installs, not reinstalled


class EnvironmentUnavailable(ExternalError):
    """An interpreter or packages cannot be had (exit 7); ``missing`` names every one."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__("; ".join(missing), hint="install that Python, or fix the package index, and retry")
        self.missing = tuple(missing)


def _uv() -> list[str]:
    found = shutil.which("uv")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise EnvironmentUnavailable(["uv was not found (not on PATH, not importable)"])


def _run(args: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    env.pop("VIRTUAL_ENV", None)
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=_TIMEOUT, check=False, env=env, cwd=cwd)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnvironmentUnavailable([f"{args[0]} failed: {exc}"]) from exc


def requirements(doc: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(requirement lines, skipped editable installs) of a recorded environment; labvault excluded."""
    lines, skipped = [], []
    for p in doc.get("packages") or []:
        name, version = str(p.get("name", "")), str(p.get("version", ""))
        if not _NAME_RE.match(name) or name.lower().replace("_", "-") == "labvault":
            continue
        source = p.get("source") if isinstance(p.get("source"), dict) else {}
        url = source.get("url") if isinstance(source.get("url"), str) else None
        commit = str(source.get("commit") or "")
        if not all(_SAFE_RE.fullmatch(v) for v in (version, url or "-", commit or "-")):
            skipped.append(f"{name} (its recorded version or source is not a plain token)")  # never a line of its own
        elif source.get("editable"):
            skipped.append(f"{name}=={version} (editable from {url})")
        elif source.get("vcs") == "git" and url and commit:
            lines.append(f"{name} @ git+{url}@{commit}")
        elif url and not url.startswith("file:"):
            lines.append(f"{name} @ {url}")
        else:
            lines.append(f"{name}=={version}")
    return sorted(lines, key=str.lower), skipped


def _minor(doc: Mapping[str, Any]) -> tuple[str, str]:
    version = str((doc.get("python") or {}).get("version", ""))
    return ".".join(version.split(".")[:2]), version


def _failing(uv: list[str], python: Path, lines: list[str], first_error: str) -> list[str]:
    """Every requirement that cannot be installed: drop each one uv names and ask again."""
    left, failed, error = list(lines), [], first_error
    for _ in range(len(lines)):
        match = _FAILED_RE.search(error)
        name = next((g for g in match.groups() if g), None) if match else None
        hits = [r for r in left if name and re.split(r"[=@ ]", r, maxsplit=1)[0].lower() == name.lower()]
        if not hits:
            failed.append(error.strip().splitlines()[-1][:300] if error.strip() else "uv pip install failed")
            break
        failed += [f"package {r} cannot be installed" for r in hits]
        left = [r for r in left if r not in hits]
        if not left:
            break
        out = _run([*uv, "pip", "install", "--dry-run", "--no-deps", "--python", str(python), *left])
        if out.returncode == 0:
            break
        error = out.stderr
    return failed


def _site_packages(folder: Path, minor: str) -> Path:
    return folder / "lib" / f"python{minor}" / "site-packages"


def _fingerprint(package: Path) -> str:
    entries = []
    for path in sorted(package.rglob("*")):
        if "__pycache__" not in path.parts and path.is_file():
            st = path.stat()
            entries.append(f"{path.relative_to(package)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def _copy_labvault(folder: Path, minor: str) -> None:
    """The running copy of labvault, copied again only when it changed (so its bytecode stays)."""
    dest = _site_packages(folder, minor) / "labvault"
    stamp = folder / ".labvault-copy"
    fingerprint = _fingerprint(_LABVAULT)
    if dest.is_dir() and stamp.is_file() and stamp.read_text(encoding="utf-8") == fingerprint:
        return
    remove_tree(dest)
    copy_tree(_LABVAULT, dest, ignore="__pycache__")
    write_whole(stamp, fingerprint)


def build_environment(doc: Mapping[str, Any], digest: Digest, *, envs_dir: Path) -> BuiltEnvironment:
    """The uv environment of ``doc`` (recorded as ``digest``) in ``envs_dir``, cached by its hash."""
    minor, full = _minor(doc)
    lines, skipped = requirements(doc)
    envs_dir.mkdir(parents=True, exist_ok=True)
    folder = envs_dir / digest.hex[:32]
    python = folder / "bin" / "python"
    with file_lock(envs_dir / f".{digest.hex[:32]}.lock", timeout=_TIMEOUT, what="the environment being built"):
        marker = folder / _MARKER
        try:
            cached = json.loads(marker.read_text(encoding="utf-8")).get("environment") == str(digest)
        except (OSError, ValueError, AttributeError):
            cached = False
        if not cached:
            remove_tree(folder)  # an interrupted build is redone from scratch
            uv = _uv()
            out = _run([*uv, "venv", "--quiet", "--no-python-downloads", "--python", minor, str(folder)])
            if out.returncode != 0 or not python.exists():
                remove_tree(folder)
                raise EnvironmentUnavailable([f"Python {minor} (recorded {full}) is not on this machine"])
            write_whole(folder / "requirements.txt", "".join(f"{r}\n" for r in lines))
            args = [*uv, "pip", "install", "--quiet", "--no-deps", "--python", str(python)]
            out = _run([*args, "-r", str(folder / "requirements.txt")])
            if out.returncode != 0:
                failed = _failing(uv, python, lines, out.stderr)
                remove_tree(folder)
                raise EnvironmentUnavailable(failed)
        _copy_labvault(folder, minor)  # always the running copy, also in a cached environment
        if not cached:
            write_whole(marker, json.dumps({"environment": str(digest), "skipped": skipped}))
    return BuiltEnvironment(folder, python, cached, tuple(skipped))
