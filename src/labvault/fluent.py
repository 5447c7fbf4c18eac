"""The module-level tracking API (``lv.start_run``, ``lv.log_metric``, ...): opens a vault and delegates.

One stack of open runs per process. Inside a process wrapped by ``labvault run`` (which exports
``LABVAULT_RUN_ID`` and ``LABVAULT_DIR``), ``start_run()`` attaches to the wrapper's run instead of
creating one, and leaving the block does not end it: the wrapper does, with the exit code.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from labvault.errors import ValidationError

if TYPE_CHECKING:
    from labvault.client.vault import ServerVault
    from labvault.entities import Artifact
    from labvault.services.tracking import ActiveRun
    from labvault.vault import Vault

__all__ = [
    "active_run",
    "log_artifact",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "seed_everything",
    "set_tag",
    "set_tags",
    "start_run",
]

_stack: list[ActiveRun] = []
_lock = threading.RLock()
_vaults: dict[str, Vault] = {}
_servers: dict[str, ServerVault] = {}


def _open_server() -> ServerVault | None:
    """The server named by LABVAULT_URI (or a saved login), opened once per process; None without one."""
    from labvault.client.settings import server_target

    target = server_target()
    if target is None:
        return None
    from labvault.client.vault import ServerVault

    key = f"{target.url} {target.token}"
    with _lock:
        if key not in _servers:
            _servers[key] = ServerVault.open(target)
        return _servers[key]


def _open_vault(path: str | os.PathLike[str] | None) -> Vault:
    from pathlib import Path  # here, not at the top: ``import labvault`` imports this module

    from labvault.config import Settings, find_vault_dir
    from labvault.vault import Vault

    settings = Settings.from_env()
    vault_dir = find_vault_dir(Path(path) if path is not None else None, settings=settings)
    key = str(vault_dir)
    with _lock:
        if key not in _vaults:
            _vaults[key] = Vault.open(vault_dir, settings=settings)
        return _vaults[key]


def _pop(handle: ActiveRun) -> None:
    with _lock:
        if handle in _stack:
            _stack.remove(handle)


def start_run(
    project: str | None = None,
    name: str | None = None,
    config: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
    inputs: Iterable[str] | None = None,
    seed: int | None = None,
    *,
    run_id: str | None = None,
    nested: bool = False,
    tags: Mapping[str, object] | None = None,
    deterministic: bool = False,
    capture_output: bool = True,
    vault: str | os.PathLike[str] | None = None,
) -> ActiveRun:
    """Open a run and make it the active one; use it as a context manager.

    - ``run_id=`` resumes a run that did not finish;
    - ``nested=True`` opens a child of the active run;
    - inside ``labvault run``, attaches to the wrapper's run (``LABVAULT_RUN_ID``).

    ``seed`` calls :func:`seed_everything` and records what it did. ``config`` files are stored byte
    for byte; ``inputs`` are data references such as ``data:transactions@v3``.

    With ``LABVAULT_URI`` set (or a ``labvault login``) the run lives on that server: params,
    tags and metrics go to a local spool that a background thread sends (``run.flush()`` waits for
    it); see docs/client-tracking.md.
    """
    from labvault.services.tracking import ActiveRun

    configs = [] if config is None else [config] if isinstance(config, str | os.PathLike) else list(config)
    refs = [] if inputs is None else [inputs] if isinstance(inputs, str) else list(inputs)
    if seed is not None:
        from labvault.services.tracking.values import check_seed

        check_seed(seed)  # before a run is created: a refused seed leaves no run behind
    with _lock:
        parent = _stack[-1] if _stack else None
        if parent is not None and not nested and run_id is None:
            raise ValidationError(
                f"{parent.ref} is already active in this process",
                hint="end it first, or pass nested=True to open a child run",
            )
        server = _open_server() if vault is None else None
        if server is not None:
            handle = _start_server_run(
                server,
                parent,
                project=project,
                name=name,
                refs=refs,
                configs=configs,
                tags=tags,
                seed=seed,
                run_id=run_id,
                capture_output=capture_output,
            )
            if parent is None and handle.owned:
                handle.install_signal_handlers()
            _stack.append(handle)
            exported = os.environ.get("LABVAULT_SEED", "")
            if seed is None and not handle.owned and exported.isdigit():  # inside `labvault run --seed`
                seed = int(exported)
            if seed is not None:
                _seed(handle, seed, deterministic)  # recorded on the server as a local vault records it
            return handle
        v = _open_vault(vault)
        wrapper_id = os.environ.get("LABVAULT_RUN_ID")
        service = v.runs
        if run_id is not None:
            run = service.resume(run_id)
            handle = ActiveRun(service, run, owned=True, resumed=True, on_close=_pop)
        elif wrapper_id and parent is None:
            run = service.get(wrapper_id)
            handle = ActiveRun(service, run, owned=False, on_close=_pop)
            if refs:
                service.add_inputs(run.id, refs)
            if configs:
                service.add_config(run.id, configs)
            if tags:
                service.set_tags(run.id, tags)
            env_seed = os.environ.get("LABVAULT_SEED")
            if seed is None and env_seed and env_seed.isdigit():
                seed = int(env_seed)
        else:
            run = service.create(
                project=project,
                name=name,
                parent_id=parent.id if parent is not None else None,
                inputs=refs,
                config=configs,
                tags=tags,
            )
            handle = ActiveRun(
                service, run, owned=True, on_close=_pop, capture_output=capture_output and parent is None
            )
        if parent is None and handle.owned:
            handle.install_signal_handlers()
        _stack.append(handle)
    if seed is not None:
        _seed(handle, seed, deterministic)
    return handle


def _start_server_run(
    server: ServerVault,
    parent: ActiveRun | None,
    *,
    project: str | None,
    name: str | None,
    refs: list[str],
    configs: list[str | os.PathLike[str]],
    tags: Mapping[str, object] | None,
    seed: int | None,
    run_id: str | None,
    capture_output: bool,
) -> ActiveRun:
    """start_run through a server: create (or resume, or attach to) the run there; logging is spooled.

    What a local vault captures (code, environment, config files, stdout/stderr) is captured here,
    on the machine the code runs on, and recorded with the run on the server.
    """
    runs = server.runs
    wrapper_id = os.environ.get("LABVAULT_RUN_ID")
    if run_id is not None:
        handle = runs.open_run(runs.resume(run_id), owned=True, resumed=True)
    elif wrapper_id and parent is None:
        handle = runs.open_run(runs.get(wrapper_id), owned=False)
        if refs:
            runs.add_inputs(handle.id, refs)
        if configs:
            runs.add_config(handle.id, configs)
        if tags:
            runs.set_tags(handle.id, tags)
    else:
        run = runs.create(
            project=project,
            name=name,
            parent_id=parent.id if parent is not None else None,
            inputs=refs,
            config=configs,
            tags=tags,
            seed=seed,
            capture=True,
        )
        handle = runs.open_run(run, owned=True, capture_output=capture_output and parent is None)
    handle._on_close = _pop
    return cast("ActiveRun", handle)


def _seed(handle: ActiveRun, seed: int, deterministic: bool) -> dict[str, Any]:
    from labvault.services.capture.seeds import seed_everything as _seed_all

    report = _seed_all(seed, deterministic=deterministic)
    handle._service.record_seed(handle.id, report)
    return report


def active_run() -> ActiveRun | None:
    """The innermost open run of this process, or None outside any run.

    Inside ``labvault run`` the wrapper's run is active from the start, so ``lv.log_metric(...)``
    works in a script with no ``start_run`` at all.
    """
    with _lock:
        if _stack:
            return _stack[-1]
        if os.environ.get("LABVAULT_RUN_ID"):
            return start_run()  # attaches to the wrapper's run; the wrapper finishes it
        return None


def _require() -> ActiveRun:
    run = active_run()
    if run is None:
        raise ValidationError("no active run", hint="open one with `with lv.start_run(...) as run:`")
    return run


def log_param(key: str, value: object) -> None:
    _require().log_param(key, value)


def log_params(params: Mapping[str, object]) -> None:
    _require().log_params(params)


def log_metric(key: str, value: float, step: int | None = None) -> None:
    _require().log_metric(key, value, step)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    _require().log_metrics(metrics, step)


def log_artifact(path: str | os.PathLike[str], name: str | None = None) -> Artifact:
    return _require().log_artifact(path, name)


def set_tag(key: str, value: object) -> None:
    _require().set_tag(key, value)


def set_tags(tags: Mapping[str, object]) -> None:
    _require().set_tags(tags)


def seed_everything(seed: int, *, deterministic: bool = False) -> dict[str, Any]:
    """Seed random, NumPy, PyTorch, TensorFlow and JAX (when importable); record it on the active run.

    Returns the report: what was seeded, what was unavailable or failed, determinism settings.
    """
    run = active_run()
    if run is not None:
        return _seed(run, seed, deterministic)
    from labvault.services.capture.seeds import seed_everything as _seed_all

    return _seed_all(seed, deterministic=deterministic)
