"""One grammar for references, parsed once at the boundary into typed values.

``run:<id>`` · ``data:<name>@<version>`` · ``<project>/<model>@<version|alias>`` · ``sha256:<hex>``

A ``sha256:`` reference may carry a prefix of 8 or more hex digits; resolving it against a store is
the store's job (an ambiguous prefix raises :class:`~labvault.errors.AmbiguousReference`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from labvault.errors import ValidationError

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_VERSION_PART",
    "DataRef",
    "Digest",
    "DigestRef",
    "ModelRef",
    "Ref",
    "RunRef",
    "check_utf8",
    "format_ref",
    "parse_digest",
    "parse_ref",
    "parse_semver",
    "validate_name",
]

MAX_NAME_LENGTH = 128
# fullmatch everywhere: `$` also matches before a trailing newline, which would let "abcdef12\n" through.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HEX_RE = re.compile(r"[0-9a-f]+")
_RUN_ID_RE = re.compile(r"[0-9a-f]{6,32}")
_DATA_VERSION_RE = re.compile(r"v[1-9][0-9]*")
_SEMVER_RE = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
DIGEST_HEX_LENGTH = 64
MIN_PREFIX = 8
#: Each part of a model version, and a data version's number, is a signed 64-bit integer where it is stored.
MAX_VERSION_PART = 2**63 - 1
_SEMVER_HINT = "model versions are semantic: MAJOR.MINOR.PATCH, e.g. 1.2.0"


def _shown(text: object) -> str:
    """``repr`` of a user's text, cut to 80 characters: an error line stays readable."""
    if isinstance(text, str) and len(text) > 80:
        return repr(text[:77]) + "..."
    return repr(text)


def check_utf8(text: str, *, what: str) -> str:
    """Return ``text`` if it is valid UTF-8 text; a command line's undecodable bytes are refused, shown escaped."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
        raise ValidationError(
            f"{what} '{shown[:80]}' is not valid UTF-8", hint="rename it; names are stored as UTF-8 text"
        ) from None
    return text


def validate_name(name: str, *, what: str = "name") -> str:
    """Return ``name`` if it is safe as a dataset, project, model or alias name, else raise.

    Names never become paths unchecked: no separators, no ``..``, no control characters, bounded.
    """
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{what} must not be empty", hint="use letters, digits, '.', '_' and '-'")
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"{what} is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}",
            hint="choose a shorter name",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValidationError(f"{what} {name!r} contains control characters", hint="remove them")
    if "/" in name or "\\" in name or ".." in name or not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"invalid {what} {name!r}",
            hint="use letters, digits, '.', '_' and '-', starting with a letter or digit, without '..'",
        )
    return name


@dataclass(frozen=True, slots=True)
class Digest:
    """A full sha256 digest, kept as 64 lowercase hex digits."""

    hex: str

    def __post_init__(self) -> None:
        if len(self.hex) != DIGEST_HEX_LENGTH or not _HEX_RE.fullmatch(self.hex):
            raise ValidationError(f"not a sha256 digest: {self.hex!r}", hint="expected 64 hex digits")

    def __str__(self) -> str:
        return f"sha256:{self.hex}"

    @property
    def short(self) -> str:
        return self.hex[:12]


@dataclass(frozen=True, slots=True)
class DigestRef:
    """``sha256:<hex>``, full or a prefix of at least 8 hex digits."""

    prefix: str

    @property
    def is_full(self) -> bool:
        return len(self.prefix) == DIGEST_HEX_LENGTH

    def __str__(self) -> str:
        return f"sha256:{self.prefix}"


@dataclass(frozen=True, slots=True)
class RunRef:
    """``run:<id>``; the id may be a unique prefix of 6 or more characters."""

    id: str

    def __str__(self) -> str:
        return f"run:{self.id}"


@dataclass(frozen=True, slots=True)
class DataRef:
    """``data:<name>`` or ``data:<name>@vN``; no version means the latest."""

    name: str
    version: str | None = None

    def __str__(self) -> str:
        return f"data:{self.name}" + (f"@{self.version}" if self.version else "")

    @property
    def number(self) -> int | None:
        return int(self.version[1:]) if self.version else None


@dataclass(frozen=True, slots=True)
class ModelRef:
    """``<project>/<model>@<version|alias>``; ``version`` holds either, ``is_alias`` tells which."""

    project: str
    model: str
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.project}/{self.model}" + (f"@{self.version}" if self.version else "")

    @property
    def is_alias(self) -> bool:
        return self.version is not None and not _SEMVER_RE.fullmatch(self.version)

    @property
    def name(self) -> str:
        return f"{self.project}/{self.model}"


Ref = RunRef | DataRef | ModelRef | DigestRef


def parse_digest(text: str, *, allow_prefix: bool = True) -> DigestRef:
    body = text[len("sha256:") :] if text.startswith("sha256:") else text
    body = body.lower()
    if not _HEX_RE.fullmatch(body) or len(body) > DIGEST_HEX_LENGTH:
        raise ValidationError(f"not a sha256 reference: {_shown(text)}", hint="expected sha256:<hex>")
    if len(body) < (MIN_PREFIX if allow_prefix else DIGEST_HEX_LENGTH):
        raise ValidationError(
            f"hash prefix {_shown(text)} is too short",
            hint=f"give at least {MIN_PREFIX} hex digits",
        )
    return DigestRef(body)


def parse_ref(text: str, *, expect: type[Ref] | tuple[type[Ref], ...] | None = None) -> Ref:  # type: ignore[valid-type]
    """Parse any reference form; with ``expect``, refuse the other forms with a clear message."""
    ref = _parse_any(text.strip() if isinstance(text, str) else text)
    if expect is not None and not isinstance(ref, expect):
        wanted = expect if isinstance(expect, tuple) else (expect,)
        names = " or ".join(_FORM_NAMES[t] for t in wanted)
        raise ValidationError(f"expected {names}, got {_shown(text)}", hint=f"write it as {names}")
    return ref


_FORM_NAMES: dict[type, str] = {
    RunRef: "run:<id>",
    DataRef: "data:<name>@<version>",
    ModelRef: "<project>/<model>@<version|alias>",
    DigestRef: "sha256:<hex>",
}


def _parse_any(text: str) -> Ref:
    if not isinstance(text, str) or not text:
        raise ValidationError("empty reference", hint="write run:<id>, data:<name>@vN, project/model@version")
    if text.startswith("sha256:"):
        return parse_digest(text)
    if text.startswith("run:"):
        run_id = text[4:].lower()
        if not _RUN_ID_RE.fullmatch(run_id):
            raise ValidationError(
                f"invalid run reference {_shown(text)}",
                hint="a run id is 6 to 32 hex digits, e.g. run:3f9c2a1b7d4e",
            )
        return RunRef(run_id)
    if text.startswith("data:"):
        name, sep, version = text[5:].partition("@")
        validate_name(name, what="dataset name")
        if sep and not _DATA_VERSION_RE.fullmatch(version):
            raise ValidationError(
                f"invalid data version {_shown(version)} in {_shown(text)}", hint="data versions are v1, v2, ..."
            )
        if sep and (len(version) > 20 or int(version[1:]) > MAX_VERSION_PART):
            raise ValidationError(
                f"data version {_shown(version)} is larger than v{MAX_VERSION_PART} (2^63-1)",
                hint="data versions are v1, v2, ...",
            )
        return DataRef(name, version or None)
    if "/" in text:
        path, sep, version = text.partition("@")
        project, _, model = path.partition("/")
        validate_name(project, what="project name")
        validate_name(model, what="model name")
        if sep:
            if not version:
                raise ValidationError(f"empty version in {_shown(text)}", hint="write project/model@1.2.0 or @prod")
            if _SEMVER_RE.fullmatch(version) or version[:1].isdigit():
                parse_semver(version)
            else:
                validate_name(version, what="alias")
        return ModelRef(project, model, version or None)
    raise ValidationError(
        f"unrecognised reference {_shown(text)}",
        hint="write run:<id>, data:<name>@vN, <project>/<model>@<version|alias> or sha256:<hex>",
    )


def format_ref(ref: Ref) -> str:
    return str(ref)


def is_semver(text: str) -> bool:
    return bool(_SEMVER_RE.fullmatch(text))


def parse_semver(text: str) -> tuple[int, int, int]:
    """``(major, minor, patch)`` of ``1.2.0``; each part at most :data:`MAX_VERSION_PART`."""
    if not isinstance(text, str) or not _SEMVER_RE.fullmatch(text):
        raise ValidationError(f"invalid version {_shown(text)}", hint=_SEMVER_HINT)
    parts = text.split(".")
    # Compare lengths first: int() of a very long digit string is slow, and refused past 4,300 digits.
    if any(len(p) > len(str(MAX_VERSION_PART)) or int(p) > MAX_VERSION_PART for p in parts):
        raise ValidationError(
            f"version {_shown(text)} has a part larger than {MAX_VERSION_PART} (2^63-1)", hint=_SEMVER_HINT
        )
    major, minor, patch = (int(p) for p in parts)
    return major, minor, patch
