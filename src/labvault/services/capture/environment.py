"""The environment a run ran in, as one canonical JSON document (stored once, shared by runs).

Python and every installed distribution (with its VCS or URL source, PEP 610), hashes of lock
files, OS and kernel, CPU, memory, GPUs (``nvidia-smi``), container markers and an allow-list of
environment variables. Names that look like secrets are recorded as present, never with a value.
The document is computed once per process and project root.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from labvault.errors import ValidationError
from labvault.safeload import loads_json

__all__ = ["ENV_FORMAT", "capture_environment", "environment_summary", "python_and_packages"]

ENV_FORMAT = "labvault.environment/1"
LOCK_FILES = ("requirements*.txt", "uv.lock", "poetry.lock", "Pipfile.lock", "environment.yml", "environment.yaml")
_ENV_PREFIXES = (
    "CUDA_",
    "CUDNN_",
    "NVIDIA_",
    "NCCL_",
    "CUBLAS_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "TF_",
    "TORCH_",
    "PYTORCH_",
    "XLA_",
    "JAX_",
    "HF_",
    "TRANSFORMERS_",
    "CONDA_",
)
_ENV_NAMES = ("VIRTUAL_ENV", "PYTHONPATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "TZ", "PATH")
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|PRIVATE", re.IGNORECASE)
PRESENT = "<present>"

_CACHE: dict[str, tuple[bytes, list[str]]] = {}


def _packages(warnings: list[str]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for dist in metadata.distributions():
        # Each access to ``dist.metadata`` (and ``dist.version``) parses the whole METADATA file again,
        # long description included: read once, this is a third of what it cost (runs capture it at start).
        meta = dist.metadata
        name = meta["Name"] if meta else None
        if not name or name.lower() in seen:
            continue
        entry: dict[str, Any] = {"name": name, "version": meta["Version"]}
        direct = dist.read_text("direct_url.json")
        if direct:
            source = _direct_source(direct, name, warnings)
            if source is not None:
                entry["source"] = source
        seen[name.lower()] = entry
    return sorted(seen.values(), key=lambda e: str(e["name"]).lower())


def python_and_packages() -> tuple[str, list[dict[str, Any]]]:
    """The ``python.version`` and ``packages`` sections of the environment document, read as
    :func:`capture_environment` reads them (pipeline stage keys use the same inputs)."""
    return platform.python_version(), _packages([])


def _direct_source(text: str, dist: str, warnings: list[str]) -> dict[str, Any] | None:
    """The PEP 610 source of a distribution; any installed package may have written the file."""
    try:
        info = loads_json(text, name=f"{dist}'s direct_url.json")
    except ValidationError as exc:
        warnings.append(f"environment: packages: {exc.message}")
        return None
    if not isinstance(info, dict):
        warnings.append(f"environment: packages: {dist}'s direct_url.json is not a JSON object")
        return None
    vcs, dir_info = info.get("vcs_info"), info.get("dir_info")
    source: dict[str, Any] = {"url": info.get("url")}
    if isinstance(vcs, dict):
        source["vcs"] = vcs.get("vcs")
        source["commit"] = vcs.get("commit_id")
    if isinstance(dir_info, dict) and dir_info.get("editable"):
        source["editable"] = True
    return source


def _lock_files(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for pattern in LOCK_FILES:
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                out[path.name] = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _os_info(sysroot: Path) -> dict[str, Any]:
    distro = None
    for line in _read(sysroot / "etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            distro = line.split("=", 1)[1].strip().strip('"')
    return {
        "system": platform.system(),
        "kernel": platform.release(),
        "version": platform.version(),
        "machine": platform.machine(),
        "distribution": distro,
    }


def _cpu(sysroot: Path) -> dict[str, Any]:
    model = None
    for line in _read(sysroot / "proc/cpuinfo").splitlines():
        if line.lower().startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"model": model or platform.processor() or None, "count": os.cpu_count()}


def _memory(sysroot: Path) -> int | None:
    for line in _read(sysroot / "proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _gpus(warnings: list[str]) -> dict[str, Any] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        query = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total,uuid", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        header = subprocess.run([exe], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        warnings.append(f"gpu: nvidia-smi failed: {exc}")
        return None
    if query.returncode != 0:
        warnings.append(f"gpu: nvidia-smi exited {query.returncode}: {query.stderr.strip()[:200]}")
        return None
    devices = []
    driver = None
    for line in query.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            driver = parts[1]
            mem = int(float(parts[2])) * 1024 * 1024 if re.match(r"^\d+(\.\d+)?$", parts[2]) else None
            devices.append({"name": parts[0], "memory": mem})
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header.stdout)
    return {"driver": driver, "cuda": cuda.group(1) if cuda else None, "count": len(devices), "devices": devices}


def _container(sysroot: Path, environ: dict[str, str]) -> dict[str, Any] | None:
    markers = []
    image = environ.get("CONTAINER_IMAGE") or environ.get("LABVAULT_CONTAINER_IMAGE")
    if (sysroot / ".dockerenv").exists():
        markers.append("/.dockerenv")
    containerenv = sysroot / "run/.containerenv"
    if containerenv.exists():
        markers.append("/run/.containerenv")
        m = re.search(r'^image="([^"]*)"', _read(containerenv), re.MULTILINE)
        image = image or (m.group(1) if m else None)
    cgroup = _read(sysroot / "proc/1/cgroup")
    for word in ("docker", "kubepods", "containerd", "libpod", "lxc"):
        if word in cgroup:
            markers.append(f"cgroup:{word}")
            break
    if "KUBERNETES_SERVICE_HOST" in environ:
        markers.append("kubernetes")
    if not markers:
        return None
    return {"markers": markers, "image": image}


def _env_vars(environ: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, value in environ.items():
        if name in _ENV_NAMES or name.startswith(_ENV_PREFIXES):
            out[name] = PRESENT if _SECRET.search(name) else value
    return dict(sorted(out.items()))


def capture_environment(
    root: Path, *, sysroot: Path = Path("/"), environ: dict[str, str] | None = None, cached: bool = True
) -> tuple[bytes, list[str]]:
    """The canonical JSON bytes of the environment document, and capture warnings."""
    key = str(root)
    if cached and key in _CACHE and environ is None and sysroot == Path("/"):
        return _CACHE[key]
    env = dict(os.environ if environ is None else environ)
    warnings: list[str] = []
    doc: dict[str, Any] = {"format": ENV_FORMAT}
    sections: dict[str, Callable[[], Any]] = {
        "python": lambda: {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": lambda: _packages(warnings),
        "lock_files": lambda: _lock_files(root),
        "os": lambda: _os_info(sysroot),
        "cpu": lambda: _cpu(sysroot),
        "memory": lambda: _memory(sysroot),
        "gpus": lambda: _gpus(warnings),
        "container": lambda: _container(sysroot, env),
        "env": lambda: _env_vars(env),
    }
    for name, fn in sections.items():
        try:
            doc[name] = fn()
        except Exception as exc:  # capture never breaks a run: record what failed and go on
            warnings.append(f"environment: {name}: {type(exc).__name__}: {exc}")
            doc[name] = None
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if cached and environ is None and sysroot == Path("/"):
        _CACHE[key] = (data, warnings)
    return data, warnings


def environment_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The short form that ``runs export`` and ``runs compare`` show."""
    python = doc.get("python") or {}
    os_info = doc.get("os") or {}
    gpus = doc.get("gpus") or {}
    return {
        "python": f"{python.get('implementation', '')} {python.get('version', '')}".strip(),
        "os": f"{os_info.get('system', '')} {os_info.get('kernel', '')}".strip(),
        "distribution": os_info.get("distribution"),
        "cpu": (doc.get("cpu") or {}).get("model"),
        "cpu_count": (doc.get("cpu") or {}).get("count"),
        "memory": doc.get("memory"),
        "gpus": [d.get("name") for d in gpus.get("devices", [])] if gpus else [],
        "gpu_driver": gpus.get("driver") if gpus else None,
        "cuda": gpus.get("cuda") if gpus else None,
        "container": doc.get("container"),
        "packages": len(doc.get("packages") or []),
        "lock_files": doc.get("lock_files") or {},
    }
