"""What the pipeline runner hands an executor, and what it gets back.

The runner decides *what* runs (keys, cache, order); an executor only runs one stage's command.
The local executor runs it in the project folder. A remote one (Dask) materialises the deps from the
object store into a scratch folder, runs the command there, stores the outputs in the object store
and returns their digests: nothing relies on a shared filesystem. Both return a ``StageOutcome``.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Executor", "StageJob", "StageOutcome"]


@dataclass(frozen=True, slots=True)
class StageJob:
    """One stage, resolved: everything an executor needs and nothing it must look up."""

    name: str  # "train", or "evaluate@val" for a matrix stage
    cmd: str  # after interpolation; run through ``sh -c``
    wdir: str  # relative to the project root, POSIX, "." for the root
    #: project-relative POSIX path -> "sha256:<hex>" of the file or tree (already in the object store)
    deps: Mapping[str, str]
    outs: tuple[str, ...]  # project-relative POSIX paths the stage must write
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment variables
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class StageOutcome:
    name: str
    returncode: int  # 0 on success; -N for a signal; 127 for a command not found
    #: project-relative POSIX path -> "sha256:<hex>"; empty when the executor leaves outputs on disk
    #: (local) or the stage failed
    outs: Mapping[str, str]
    log: str  # stdout and stderr, interleaved, the last 64 KiB
    started: float  # epoch seconds
    ended: float
    missing_outs: tuple[str, ...] = ()  # declared outputs the command did not write
    worker: str = "local"


class Executor(Protocol):
    def submit(self, job: StageJob) -> Future[StageOutcome]:
        """Start the stage; the future's result is its outcome (a failure is an outcome, not an exception)."""
        ...

    def cancel_all(self) -> None:
        """Stop every running stage (its whole process group) and start nothing new."""
        ...

    def close(self) -> None: ...
