"""Behaviour the docs promise, through the real ``labvault`` executable: usage errors, run options,
unknown inputs, --version, the fsck hint, downloads of run artifacts and the data diff verdict."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from importlib.metadata import version as dist_version
from pathlib import Path

import pytest

from tests.e2e.conftest import Cli
from tests.s3server import S3Server


@pytest.fixture
def inited(cli: Cli, project: Path) -> Path:
    cli("-q", "init")
    return project


def _runs(cli: Cli) -> list[dict[str, object]]:
    runs: list[dict[str, object]] = json.loads(cli("runs", "list", "--json").stdout)
    return runs


# -- usage errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "cause"),
    [
        (("object", "cat"), "error: missing argument 'ref'"),
        (("nonsense",), "error: no such command 'nonsense'"),
        (("gc", "--grace"), "error: option '--grace' requires an argument"),
        (("runs", "list", "--limit", "x"), "error: invalid value for '--limit'"),
        (("run", "--json", "--", "true"), "error: no such option: --json"),
    ],
)
def test_every_usage_error_is_one_error_line_and_a_usage_hint(
    cli: Cli, inited: Path, args: tuple[str, ...], cause: str
) -> None:
    proc = cli(*args, expect=2)
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith(cause), proc.stderr
    assert lines[1].startswith("hint: "), proc.stderr
    assert "--help`" in lines[1]
    assert proc.stdout == ""


def test_an_unknown_option_before_the_command_is_refused_and_nothing_is_recorded(cli: Cli, inited: Path) -> None:
    cli("run", "--json", "--", "true", expect=2)
    cli("run", "--bogus", "true", expect=2)
    assert _runs(cli) == []
    # Options after the command are the command's own, with or without `--`.
    cli("run", "--name", "a", "--", sys.executable, "-c", "import sys; sys.exit(0)", "--json")
    cli("run", "--name", "b", sys.executable, "-c", "import sys; sys.exit(3)", expect=3)
    assert [r["name"] for r in _runs(cli)] == ["b", "a"]


def test_run_leaves_the_commands_own_quiet_and_verbose_flags_alone(cli: Cli, inited: Path) -> None:
    check = "import sys; sys.exit(0 if sys.argv[1:] == ['-v', '-q'] else 9)"
    cli("run", sys.executable, "-c", check, "-v", "-q")
    cli("run", "--", sys.executable, "-c", check, "-v", "-q")
    # Before the command they are labvault's own, as everywhere.
    quiet = cli("run", "-q", "--name", "q", "--", sys.executable, "-c", "pass")
    assert quiet.stderr == ""
    assert cli("-q", "run", "--", sys.executable, "-c", "pass").stderr == ""


def test_an_unknown_version_of_a_known_dataset_is_refused_before_the_run(cli: Cli, inited: Path) -> None:
    (inited / "t.csv").write_text("a\n1\n")
    cli("-q", "data", "add", "transactions", "t.csv")
    marker = inited / "ran"
    script = f"open({str(marker)!r}, 'w').close()"
    proc = cli("run", "--input", "data:transactions@v99", "--", sys.executable, "-c", script, expect=3)
    assert proc.stderr.startswith("error: data:transactions@v99"), proc.stderr
    assert not marker.exists()
    assert _runs(cli) == []
    cli("run", "--input", "data:transactions@v1", "--", sys.executable, "-c", script)
    assert marker.exists()


def test_version_option_and_bare_command(cli: Cli, tmp_path: Path) -> None:
    expected = f"labvault {dist_version('labvault')}\n"
    assert cli("--version", cwd=tmp_path).stdout == expected
    bare = cli(cwd=tmp_path, expect=0)
    assert bare.stdout.startswith("Usage: labvault")
    assert "--version" in bare.stdout


def test_version_option_starts_without_the_cli_framework(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import sys; from labvault.cli.entry import main; code = main(['--version']); "
        "heavy = sorted(m for m in ('typer', 'click', 'sqlalchemy', 'rich') if m in sys.modules); "
        "print(heavy, code)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.splitlines()[-1] == "[] 0"


def test_fsck_hint_names_commands_that_exist(cli: Cli, inited: Path) -> None:
    (inited / "f").write_bytes(b"payload")
    cli("-q", "data", "add", "f", "f")
    for pack in (inited / ".labvault" / "objects").rglob("*.pack"):
        pack.unlink()
    proc = cli("fsck", expect=1)
    hint = proc.stderr.splitlines()[-1]
    assert hint.startswith("hint: "), proc.stderr
    assert "labvault pull" not in hint
    assert "labvault object put" in hint


# -- data ---------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_checkout_of_a_missing_object_is_exit_5_on_both_backends(
    cli: Cli, project: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    db = ["--db", request.getfixturevalue("pg_url")] if backend == "postgres" else []
    cli("-q", "init", *db)
    (project / "raw").mkdir()
    for i in range(3):
        (project / "raw" / f"{i}.txt").write_text(f"row {i}\n" * 50)
    cli("-q", "data", "add", "raw", "raw")
    for pack in (project / ".labvault" / "objects").rglob("*.pack"):
        pack.unlink()
    for loose in (project / ".labvault" / "objects" / "sha256").rglob("*"):
        if loose.is_file():
            loose.unlink()
    proc = cli("data", "checkout", "raw", "restored", expect=5)  # the tree's file list is cached: a file is missing
    assert proc.stderr.startswith("error: "), proc.stderr
    shutil.rmtree(project / ".labvault" / "cache")
    proc = cli("data", "checkout", "raw", "again", expect=5)  # the tree itself is missing
    assert proc.stderr.startswith("error: "), proc.stderr
    assert "labvault fsck" in proc.stderr
    assert not (project / "again").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_bucket(s3_server: S3Server) -> tuple[str, str]:
    """(endpoint, bucket): the session's moto S3 server process, a bucket holding ``ds/a.csv``."""
    bucket = s3_server.bucket("labvault-polish")
    s3_server.client().put_object(Bucket=bucket, Key="ds/a.csv", Body=b"a\n1\n")
    return s3_server.endpoint, bucket


def _aws_env(endpoint: str, *, credentials: bool) -> dict[str, str]:
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        # No credentials from files or an instance metadata service either.
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
        "AWS_CONFIG_FILE": "/nonexistent/config",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if credentials:
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return env


def test_s3_import_without_credentials_is_exit_7_naming_the_variables(
    cli: Cli, inited: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    assert not {k for k in os.environ if k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SESSION_TOKEN")}
    proc = cli("data", "import", "remote", f"s3://{bucket}/ds", env=_aws_env(endpoint, credentials=False), expect=7)
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("error: "), proc.stderr
    assert lines[1].startswith("hint: ")
    assert "AWS_ACCESS_KEY_ID" in lines[1]
    assert "AWS_SECRET_ACCESS_KEY" in lines[1]
    assert cli("data", "list", "--json").stdout.strip() == "[]"
    # With them, the same import works; a key that is not there is not found (3).
    env = _aws_env(endpoint, credentials=True)
    cli("-q", "data", "import", "remote", f"s3://{bucket}/ds", env=env)
    cli("data", "import", "other", f"s3://{bucket}/nope.csv", env=env, expect=3)


def test_unreachable_sources_are_exit_7_not_missing(cli: Cli, inited: Path) -> None:
    closed = f"127.0.0.1:{_free_port()}"
    proc = cli("data", "import", "web", f"http://{closed}/a.csv", expect=7)
    assert proc.stderr.startswith("error: cannot reach"), proc.stderr
    env = {**_aws_env(f"http://{closed}", credentials=True), "AWS_MAX_ATTEMPTS": "1"}  # no retries: fast
    proc = cli("data", "import", "remote", "s3://bucket1/ds", env=env, expect=7, timeout=300)
    assert proc.stderr.startswith("error: cannot reach"), proc.stderr


def test_http_errors_are_told_apart(cli: Cli, inited: Path) -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            code = {"/gone.csv": 404, "/secret.csv": 403}.get(self.path, 503)
            self.send_response(code)
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert "does not exist" in cli("data", "import", "w", f"{base}/gone.csv", expect=3).stderr
        assert "access denied" in cli("data", "import", "w", f"{base}/secret.csv", expect=7).stderr
        assert "cannot reach" in cli("data", "import", "w", f"{base}/busy.csv", expect=7).stderr
    finally:
        server.shutdown()
        server.server_close()


def test_local_import_outside_the_project_records_a_file_url(cli: Cli, inited: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.csv").write_text("a\n1\n")
    doc = json.loads(cli("data", "import", "ext", str(outside), "--json").stdout)
    assert doc["storage_uri"] == outside.resolve().as_uri()
    assert doc["source_url"] == outside.resolve().as_uri()
    assert doc["storage_uri"].startswith("file:///")


def test_the_extra_named_by_an_import_hint_exists(cli: Cli, inited: Path) -> None:
    import tomllib

    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        proc = cli("data", "import", "g", "gs://bucket/x.csv", expect=2)
        assert proc.stderr.splitlines()[1] == "hint: pip install 'labvault[gcs]'"
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert {"s3", "gcs"} <= set(pyproject["project"]["optional-dependencies"])


def _write_csv(path: Path, rows: list[tuple[float, str]], *, extra: bool = False) -> None:
    head = "amount,merchant" + (",country" if extra else "")
    body = "".join(f"{a},{m}" + (",fr" if extra else "") + "\n" for a, m in rows)
    path.write_text(head + "\n" + body)


def test_data_diff_verdict_new_and_vanished_values_and_readable_numbers(cli: Cli, inited: Path) -> None:
    import random

    rng = random.Random(3)
    base = [(round(rng.gauss(50_000, 500), 2), rng.choice("abc")) for _ in range(400)]
    csv = inited / "tx.csv"
    _write_csv(csv, base)
    cli("-q", "data", "add", "tx", "tx.csv")
    _write_csv(csv, [(a, m) for a, m in reversed(base[1:])])  # same distribution
    cli("-q", "data", "add", "tx", "tx.csv")
    _write_csv(csv, [(a * 1.05, "d" if m == "c" else m) for a, m in base])  # shifted; c replaced by d
    cli("-q", "data", "add", "tx", "tx.csv")
    _write_csv(csv, base, extra=True)
    cli("-q", "data", "add", "tx", "tx.csv")

    same = cli("data", "diff", "tx@v1", "tx@v2").stdout
    assert "verdict: no drift (max PSI " in same
    drift = cli("data", "diff", "tx@v1", "tx@v3").stdout
    assert "verdict: drift in 1 column above PSI 0.2 (amount; max PSI " in drift
    assert "e+0" not in drift
    assert "mean=50,0" in drift
    merchant = next(line for line in drift.splitlines() if line.lstrip().startswith("merchant"))
    assert "new: d" in merchant
    assert "vanished: c" in merchant
    schema = cli("data", "diff", "tx@v1", "tx@v4").stdout
    assert "verdict: schema changed (added country)" in schema
    doc = json.loads(cli("data", "diff", "tx@v1", "tx@v3", "--json").stdout)
    assert doc["verdict"] == {"status": "drift", "psi_threshold": 0.2, "drifted_columns": ["amount"]}
    merchant_doc = next(c for c in doc["tabular"][0]["columns"] if c["column"] == "merchant")
    assert merchant_doc["new_values"] == ["d"]
    assert merchant_doc["vanished_values"] == ["c"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (50213.4, "50,213.4"),
        (50000.0, "50,000"),
        (123456, "123,456"),
        (0.03124, "0.03124"),
        (12.3456, "12.35"),
        (1e-7, "1.000e-07"),
        (0.0, "0"),
        (float("nan"), "nan"),
    ],
)
def test_readable_numbers(value: float, text: str) -> None:
    from labvault.cli.render import readable_number

    assert readable_number(value) == text
