"""The one exception tree of labvault.

Every error a user can meet carries a one-line cause (``str(err)``), a ``hint`` (the next thing to
try, often a command) and an ``exit_code`` from the conventions table. Front ends map them in one
place: the CLI prints ``error: <cause>`` and ``hint: <hint>`` and exits with the code; the server
maps the class to an HTTP status.

::

    LabvaultError                      exit 1 unless a subclass says otherwise
    ├── CheckFailed          (1)       a check ran and said no (fsck, policy gates, audit, reproduce)
    ├── ValidationError      (2)       bad arguments, names, references, filters, YAML
    │   └── AmbiguousReference (2)     a hash or id prefix matches several things
    ├── NotFound             (3)       vault, run, dataset, version, alias, object
    │   └── VaultNotFound    (3)
    ├── Conflict             (4)       different content under an immutable name, a lost race
    ├── IntegrityError       (5)       a corrupt or missing object met while reading
    ├── LockedError          (6)       a lock or busy database beyond the timeout
    ├── ExternalError        (7)       could not attempt: git, network, package index, disk full
    │   └── StorageError     (7)       the object store or database failed underneath us
    └── NotAllowed           (8)       a server refused the token (HTTP 401) or its role (HTTP 403)
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "AmbiguousReference",
    "CheckFailed",
    "Conflict",
    "ExternalError",
    "IntegrityError",
    "LabvaultError",
    "LockedError",
    "NotAllowed",
    "NotFound",
    "StorageError",
    "ValidationError",
    "VaultNotFound",
]

#: The conventions table, documented in the CLI reference.
EXIT_CODES: dict[int, str] = {
    0: "success, including idempotent no-ops",
    1: "a check ran and said no (fsck problems, policy gates unmet, audit chain broken, not reproduced)",
    2: "usage or invalid input (bad arguments, names, filters, YAML)",
    3: "not found (vault, run, dataset, version, alias, object)",
    4: "conflict (different content under an existing immutable version, a lost race)",
    5: "integrity (a corrupt or missing object met while reading)",
    6: "locked or busy beyond the timeout",
    7: "could not attempt (an external failure: git, network, package index, disk full)",
    8: "not allowed (a server refused the token or its role: HTTP 401/403)",
}


class LabvaultError(Exception):
    """Base of every error labvault raises on purpose."""

    exit_code: int = 1
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        # One line: a cause never spans lines, so logs and terminals stay readable.
        super().__init__(" ".join(message.split()))
        self.hint = hint if hint is not None else self.default_hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckFailed(LabvaultError):
    """A check ran to completion and its answer is no."""

    exit_code = 1


class ValidationError(LabvaultError):
    """The input is malformed: a bad name, reference, argument, filter or file."""

    exit_code = 2


class AmbiguousReference(ValidationError):
    """A prefix matches more than one object or record."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(candidates[:10]) + (" ..." if len(candidates) > 10 else "")
        super().__init__(
            f"'{prefix}' is ambiguous: it matches {len(candidates)} entries ({shown})",
            hint="give more characters of the id",
        )
        self.candidates = candidates


class NotFound(LabvaultError):
    exit_code = 3


class VaultNotFound(NotFound):
    default_hint = "run `labvault init` in the project root, or set LABVAULT_DIR"


class Conflict(LabvaultError):
    exit_code = 4


class IntegrityError(LabvaultError):
    exit_code = 5
    default_hint = "run `labvault fsck` to check the whole vault"


class LockedError(LabvaultError):
    exit_code = 6
    default_hint = "another labvault process holds the lock; wait for it, or retry"


class ExternalError(LabvaultError):
    exit_code = 7


class StorageError(ExternalError):
    """The filesystem, object store or database failed underneath us (disk full, I/O error...)."""


class NotAllowed(LabvaultError):
    """A server refused the request: no valid token (``status`` 401) or a role too low (403)."""

    exit_code = 8

    def __init__(self, message: str, *, hint: str | None = None, status: int = 401) -> None:
        super().__init__(message, hint=hint)
        self.status = status
