"""``seed_everything``: seed every random source that is importable, and say what was done.

Python ``random`` always; NumPy, PyTorch (CPU and CUDA), TensorFlow and JAX when importable. The
report lists what was seeded, what was not available or failed, and the settings that decide
whether a rerun is bit-for-bit: cuDNN flags, deterministic algorithms, whether PYTHONHASHSEED was
fixed when the interpreter started (it cannot be changed afterwards), and thread counts.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
import sys
from typing import Any

__all__ = ["determinism_settings", "seed_everything"]

_MAX_SEED = 2**32 - 1


def _available(module: str) -> bool:
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def determinism_settings() -> dict[str, Any]:
    """What decides whether a rerun repeats bit for bit, as far as this process can see."""
    out: dict[str, Any] = {
        "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
        # sys.flags.hash_randomization is 0 only when PYTHONHASHSEED=0 was set at start-up; any other
        # fixed value still shows 1, so the variable above is what tells.
        "hash_randomization": bool(sys.flags.hash_randomization),
        "threads": {
            name: os.environ[name]
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
            if name in os.environ
        },
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            out["torch"] = {
                "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
                "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
                "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
                "num_threads": int(torch.get_num_threads()),
                "cuda_available": bool(torch.cuda.is_available()),
            }
        except Exception as exc:  # a broken torch must not break the run
            out["torch"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _seed_numpy(seed: int) -> None:
    np = importlib.import_module("numpy")
    np.random.seed(seed)


def _seed_torch(seed: int, deterministic: bool) -> list[str]:
    torch = importlib.import_module("torch")
    done = ["torch"]
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        done.append("torch.cuda")
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return done


def _seed_tensorflow(seed: int, deterministic: bool) -> None:
    tf = importlib.import_module("tensorflow")
    tf.random.set_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _seed_jax(seed: int) -> Any:
    jax = importlib.import_module("jax")
    return jax.random.PRNGKey(seed)


def seed_everything(seed: int, *, deterministic: bool = False) -> dict[str, Any]:
    """Seed every importable random source with ``seed``; return the report a run records.

    With ``deterministic=True`` PyTorch and TensorFlow are also told to use deterministic
    algorithms (slower; some operations then warn). JAX has no global seed: the report's
    ``jax_key`` entry is a ``PRNGKey(seed)`` to pass on (it is not stored in the run).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        from labvault.errors import ValidationError

        raise ValidationError(f"invalid seed {seed!r}", hint=f"a seed is an integer from 0 to {_MAX_SEED}")
    seeded: list[str] = ["random"]
    unavailable: list[str] = []
    failed: dict[str, str] = {}
    random.seed(seed)
    report: dict[str, Any] = {"seed": seed, "deterministic": deterministic}
    steps: dict[str, Any] = {
        "numpy": lambda: _seed_numpy(seed),
        "torch": lambda: _seed_torch(seed, deterministic),
        "tensorflow": lambda: _seed_tensorflow(seed, deterministic),
        "jax": lambda: _seed_jax(seed),
    }
    for name, step in steps.items():
        if not _available(name):
            unavailable.append(name)
            continue
        try:
            result = step()
        except Exception as exc:  # a framework that fails to seed is recorded, not fatal
            failed[name] = f"{type(exc).__name__}: {exc}"
            continue
        if name == "torch":
            seeded.extend(result)
        else:
            seeded.append(name)
        if name == "jax":
            report["jax_key"] = result
    report.update(seeded=seeded, unavailable=unavailable, failed=failed, settings=determinism_settings())
    return report
