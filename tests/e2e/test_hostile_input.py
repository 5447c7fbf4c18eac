"""Hostile input through the real executable: a table of case -> expected exit code.

Each case is input an attacker (or an accident) could hand labvault: on the command line, in a file
name, in ``labvault.yaml``, ``labvault.lock``, ``config.json``, ``.labvaultignore`` or a model's
``metrics.json``. None may crash (a traceback, exit 1),
hang or be accepted: each exits with the code of the conventions table and a one-line error. The cases
share one project (a vault with a registered model and a dataset); a case that plants a hostile file
removes it again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import LABVAULT

_DEEP_PARENS = "(" * 5000 + "status = 'x'" + ")" * 5000
_MANY_NOTS = "not " * 5000 + "status = 'x'"
_BIG = "99999999999999999999.0.0"


def _alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nmodels:\n  fraud/detector:\n    prod:\n      bomb: *a{levels}\n"


def _lock(key: str) -> Callable[[Path], str]:
    """A labvault.lock whose one entry is the project's real dataset under another key."""

    def build(root: Path) -> str:
        doc = json.loads((root / "labvault.lock").read_text())
        (entry,) = doc["datasets"].values()
        return json.dumps({"datasets": {key: entry}, "format": "labvault.lock/1"})

    return build


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str | bytes, ...]
    exit: int
    says: str = ""  # a fragment stderr must contain
    # Files planted for the case (path relative to the project -> content), then restored.
    files: dict[str | bytes, str | bytes | Callable[[Path], str]] = field(default_factory=dict)
    xfail: str = ""


CASES = [
    # -- the filter language ----------------------------------------------------------------------
    Case("filter-5000-parentheses", ("runs", "list", "--filter", _DEEP_PARENS), 2, "characters long"),
    Case("filter-5000-nots", ("runs", "list", "--filter", _MANY_NOTS), 2, "characters long"),
    Case("filter-101-deep", ("runs", "list", "--filter", "not " * 101 + "status = 'x'"), 2, "nested more than 100"),
    Case(
        "filter-1200-terms", ("runs", "list", "--filter", "name in (" + ",".join(["'a'"] * 1200) + ")"), 2, "500 values"
    ),
    Case("filter-100-deep-is-fine", ("runs", "list", "--filter", "(" * 100 + "status = 'x'" + ")" * 100), 0),
    Case("filter-non-utf8", ("runs", "list", "--filter", b"name = 'a\xff'"), 2, "byte \\xff is not valid UTF-8"),
    Case("sort-non-utf8", ("runs", "list", "--sort", b"-metrics.\xff"), 2, ""),
    Case("filter-injection", ("runs", "list", "--filter", "name = 'a'; DROP TABLE runs"), 2, "invalid filter"),
    # -- versions ---------------------------------------------------------------------------------
    Case("version-beyond-64-bits", ("models", "register", "fraud/detector", "ml", "--version", _BIG), 2, "2^63-1"),
    Case("version-beyond-64-bits-in-ref", ("get", f"fraud/detector@{_BIG}", "-o", "out"), 2, "2^63-1"),
    Case("version-10000-digits", ("models", "show", "fraud/detector@0.0." + "9" * 10_000), 2, "2^63-1"),
    Case("data-version-beyond-64-bits", ("data", "show", "data:raw@v99999999999999999999"), 2, "2^63-1"),
    Case("audit-subject-non-utf8", ("audit", "log", "--subject", b"x\xff"), 2, "x\\xff"),
    Case("version-with-newline", ("models", "register", "fraud/detector", "ml", "--version", "1.0.0\n"), 2),
    Case("init-db-url-empty-label", ("init", "fresh", "--db", "postgresql://u@a..b/x"), 2, "invalid database URL"),
    Case("init-db-url-non-utf8", ("init", "fresh", "--db", b"postgresql://u@h\xff/x"), 2, "invalid database URL"),
    # -- numbers beyond what is stored ------------------------------------------------------------
    Case("runs-limit-beyond-64-bits", ("runs", "list", "--limit", "99999999999999999999"), 2, "limit"),
    Case("audit-limit-beyond-64-bits", ("audit", "log", "-n", "99999999999999999999"), 2, "limit"),
    Case("run-seed-beyond-32-bits", ("run", "--seed", "99999999999999999999", "--", "true"), 2, "seed"),
    Case("run-seed-beyond-pythonhashseed", ("run", "--seed", "4294967296", "--", "true"), 2, "seed"),
    # -- file names that are not UTF-8 ------------------------------------------------------------
    Case("data-add-non-utf8-file", ("data", "add", "bad", "d_bad"), 2, "bad\\xff.txt"),
    Case("data-add-non-utf8-path", ("data", "add", "solo", b"solo\xfe.csv"), 2, "solo\\xfe.csv"),
    Case("data-add-non-utf8-link-target", ("data", "add", "lnk", "d_lnk"), 2, "tgt\\xff"),
    Case("models-register-non-utf8-file", ("models", "register", "fraud/other", "d_bad"), 2, "bad\\xff.txt"),
    Case("run-name-non-utf8", ("run", "--name", b"n\xff", "--", "true"), 2, "n\\xff"),
    Case("data-status-non-utf8-file", ("data", "status"), 2, "new\\xff.csv", {b"d_ok/new\xff.csv": b"x"}),
    Case("ignore-file-not-utf8", ("data", "status"), 2, "not UTF-8", {"d_ok/.labvaultignore": b"\xff*.tmp\n"}),
    Case("ignore-file-bad-pattern", ("data", "status"), 2, ".labvaultignore", {"d_ok/.labvaultignore": "!\n"}),
    # -- labvault.yaml ----------------------------------------------------------------------------
    Case(
        "yaml-alias-bomb",
        ("models", "promote", "fraud/detector@0.1.0", "--to", "prod"),
        2,
        "labvault.yaml:5: aliases expand",
        {"labvault.yaml": _alias_bomb(8)},
    ),
    Case(
        "yaml-recursive-alias",
        ("models", "check", "fraud/detector@0.1.0", "--for", "prod"),
        2,
        "refers to a node that contains it",
        {"labvault.yaml": "models: &m\n  fraud/detector: {prod: *m}\n"},
    ),
    Case(
        "yaml-over-10-mib",
        ("models", "promote", "fraud/detector@0.1.0", "--to", "prod"),
        2,
        "larger than 10 MiB",
        {"labvault.yaml": "models: {}\n" + "#" * (10 * 1024 * 1024 + 1)},
    ),
    Case(
        "yaml-deep-nesting",
        ("models", "promote", "fraud/detector@0.1.0", "--to", "prod"),
        2,
        "nested more than 100",
        {"labvault.yaml": "models: " + "[" * 500 + "]" * 500},
    ),
    Case(
        "yaml-500000-items",
        ("models", "promote", "fraud/detector@0.1.0", "--to", "prod"),
        2,
        "labvault.yaml:1: more than 500000 nodes",
        {"labvault.yaml": "models: [" + "1," * 500_001 + "]\n"},
    ),
    Case(
        "yaml-python-tag",
        ("models", "promote", "fraud/detector@0.1.0", "--to", "prod"),
        2,
        "labvault.yaml:1",
        {"labvault.yaml": "models: !!python/object/apply:os.system [touch pwned]\n"},
    ),
    Case(
        "yaml-nul-in-model-name",
        ("models", "promote", "fraud/detector@0.1.0", "--to", "prod"),
        2,
        "control characters",
        {"labvault.yaml": 'models:\n  "fraud/de\\0t":\n    prod: {}\n'},
    ),
    Case(
        "yaml-not-utf8",
        ("models", "promote", "fraud/detector@0.1.0", "--to", "prod"),
        2,
        "not UTF-8",
        {"labvault.yaml": b"models:\n  fraud/detector: {prod: {approvals: \xff}}\n"},
    ),
    Case(
        "model-metrics-json-deep-nesting",
        ("models", "promote", "fraud/hostile@0.1.0", "--to", "prod"),
        1,  # gates unmet: the metrics cannot be read
        "unmet gates: metric auc",
        {"labvault.yaml": "models:\n  fraud/hostile:\n    prod:\n      metrics: {auc: '>= 0.9'}\n"},
    ),
    # -- labvault.lock ----------------------------------------------------------------------------
    Case("lock-deep-nesting", ("data", "status"), 2, "nested more than 100", {"labvault.lock": "[" * 200_000}),
    Case("lock-over-10-mib", ("data", "status"), 2, "larger than 10 MiB", {"labvault.lock": " " * (11 << 20)}),
    Case(
        "lock-key-dotdot",
        ("data", "checkout"),
        2,
        "the key '../escape' holds the name '..'",
        {"labvault.lock": _lock("../escape")},
    ),
    Case(
        "lock-key-absolute",
        ("data", "checkout"),
        2,
        "the key '/tmp/escape' is an absolute path",
        {"labvault.lock": _lock("/tmp/escape")},
    ),
    Case(
        "lock-key-nul",
        ("data", "checkout"),
        2,
        "holds a name with NUL",
        {"labvault.lock": _lock("d\u0000x")},
    ),
    # -- .labvault/config.json --------------------------------------------------------------------
    Case("config-deep-nesting", ("runs", "list"), 2, "nested more than 100", {".labvault/config.json": "[" * 200_000}),
    Case("config-not-json", ("runs", "list"), 2, "invalid JSON", {".labvault/config.json": "{format_version: 2"}),
    # -- names ------------------------------------------------------------------------------------
    Case("data-name-dotdot", ("data", "add", "..", "d_ok"), 2, "invalid dataset name"),
    Case("data-name-absolute", ("data", "add", "/etc/passwd", "d_ok"), 2, "invalid dataset name"),
    Case("data-name-newline", ("data", "add", "raw\nx", "d_ok"), 2, "control characters"),
    Case("data-name-10000-chars", ("data", "add", "x" * 10_000, "d_ok"), 2, "the limit is 128"),
    Case("data-name-percent-encoded", ("data", "add", "%2e%2e", "d_ok"), 2, "invalid dataset name"),
    Case("data-name-cyrillic-lookalike", ("data", "add", "r\u0430w", "d_ok"), 2, "invalid dataset name"),
    Case("data-name-fullwidth-dots", ("data", "add", "\uff0e\uff0e", "d_ok"), 2, "invalid dataset name"),
    Case("data-ref-dotdot", ("data", "checkout", "data:..@v1"), 2, "invalid dataset name"),
    Case("model-name-dotdot", ("models", "register", "fraud/..", "ml"), 2, "invalid model name"),
    Case("project-name-dotdot", ("models", "register", "../detector", "ml"), 2, "invalid project name"),
    Case("model-name-absolute", ("models", "register", "/etc/passwd", "ml"), 2, ""),
    Case("model-name-newline", ("models", "register", "fraud/det\nx", "ml"), 2, "control characters"),
    Case("model-name-10000-chars", ("models", "register", "fraud/" + "m" * 10_000, "ml"), 2, "the limit is 128"),
    Case("model-name-percent-encoded", ("models", "register", "fraud/%2e%2e", "ml"), 2, "invalid model name"),
    Case("model-name-lookalike", ("models", "register", "fr\u0430ud/detector", "ml"), 2, "invalid project name"),
    Case("alias-dotdot", ("get", "fraud/detector@..", "-o", "out"), 2, "invalid alias"),
    Case("alias-path", ("get", "fraud/detector@../../etc", "-o", "out"), 2, ""),
    Case("alias-percent-encoded", ("models", "promote", "fraud/detector@0.1.0", "--to", "%2e%2e"), 2, "alias"),
    Case("alias-newline", ("models", "promote", "fraud/detector@0.1.0", "--to", "prod\n"), 2, "alias"),
    Case("run-ref-dotdot", ("runs", "show", "run:../../etc"), 2, "invalid run reference"),
    Case("digest-path", ("object", "cat", "sha256:../../etc/passwd"), 2, "not a sha256 reference"),
    Case("digest-10000-chars", ("object", "cat", "sha256:" + "a" * 10_000), 2, "not a sha256 reference"),
]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_") or k.startswith("LABVAULT_TEST_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, "NO_COLOR": "1", "LABVAULT_USER": "tester@example.com", "HOME": str(home)}


def _run(root: Path, *args: str | bytes, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [LABVAULT, *args], cwd=root, env=_env(root.parent), capture_output=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def hostile_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "project"
    root.mkdir()
    assert _run(root, "init").returncode == 0
    (root / "ml").mkdir()
    (root / "ml" / "model.bin").write_bytes(b"weights")
    assert _run(root, "models", "register", "fraud/detector", "ml").returncode == 0
    (root / "hostile").mkdir()
    (root / "hostile" / "metrics.json").write_text("[" * 100_000)
    assert _run(root, "models", "register", "fraud/hostile", "hostile").returncode == 0
    (root / "d_ok").mkdir()
    (root / "d_ok" / "a.csv").write_text("x\n1\n")
    assert _run(root, "data", "add", "raw", "d_ok").returncode == 0
    broot = os.fsencode(root)
    os.mkdir(broot + b"/d_bad")
    for name in (b"/d_bad/ok.txt", b"/d_bad/bad\xff.txt", b"/solo\xfe.csv"):
        with open(broot + name, "wb") as f:
            f.write(b"x")
    os.mkdir(broot + b"/d_lnk")
    os.symlink(b"tgt\xff", broot + b"/d_lnk/ln")
    return root


def _plant(root: Path, files: dict[str | bytes, str | bytes | Callable[[Path], str]]) -> Callable[[], None]:
    saved: dict[Path, bytes | None] = {}
    for rel, planted in files.items():
        path = root / os.fsdecode(rel)
        saved[path] = path.read_bytes() if path.exists() else None
        content = planted(root) if callable(planted) else planted
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    def restore() -> None:
        for path, old in saved.items():
            if old is None:
                path.unlink()
            else:
                path.write_bytes(old)

    return restore


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=False)] if c.xfail else [])
        for c in CASES
    ],
)
def test_hostile_input(hostile_project: Path, case: Case) -> None:
    restore = _plant(hostile_project, case.files)
    try:
        started = time.monotonic()
        proc = _run(hostile_project, *case.args)
        took = time.monotonic() - started
    finally:
        restore()
    stderr = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == case.exit, f"exit {proc.returncode}, expected {case.exit}\n{stderr[-2000:]}"
    assert case.says in stderr, stderr[-2000:]
    if case.exit == 2:
        lines = stderr.splitlines()
        assert lines[0].startswith("error: "), lines[0][:500]
        assert len(lines[0]) < 400, lines[0][:500]
        assert any(line.startswith("hint: ") for line in lines)
    assert took < 20, f"{case.id} took {took:.1f} s"


def test_the_project_is_untouched(hostile_project: Path) -> None:
    """After every case: the versions and the dataset made first, no run, nothing written outside the project."""
    assert not (hostile_project / "pwned").exists()
    assert not (hostile_project / "fresh").exists()  # a refused init leaves no folder behind
    assert not (hostile_project.parent / "escape").exists()
    listing = _run(hostile_project, "models", "versions", "fraud/detector", "--json")  # --version refused
    assert [v["version"] for v in json.loads(listing.stdout)] == ["0.1.0"]
    data = _run(hostile_project, "data", "list", "--json")
    assert [d["dataset_name"] for d in json.loads(data.stdout)] == ["raw"]
    # A refused `labvault run` leaves no run behind (the seed is checked before the run is created).
    assert json.loads(_run(hostile_project, "runs", "list", "--json").stdout) == []
    assert _run(hostile_project, "fsck").returncode == 0
    shutil.rmtree(hostile_project / "out", ignore_errors=True)


def test_a_fifo_or_device_for_labvault_yaml_is_refused_not_waited_on(hostile_project: Path) -> None:
    policy = hostile_project / "labvault.yaml"
    for make in (os.mkfifo, lambda p: os.symlink("/dev/zero", p)):
        make(policy)
        try:
            proc = _run(hostile_project, "models", "promote", "fraud/detector@0.1.0", "--to", "prod", timeout=20)
        finally:
            policy.unlink()
        stderr = proc.stderr.decode()
        assert proc.returncode == 2, stderr
        assert "labvault.yaml is not a regular file" in stderr
