"""Team vault set-up through the real executable: init, --join, config, vault show, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Cli
from tests.s3server import S3Server


@pytest.fixture
def s3env(s3_server: S3Server) -> dict[str, str]:
    return {**s3_server.env(), "LABVAULT_USER": "t@example.com"}


def _no_config(project: Path) -> None:
    assert not (project / ".labvault" / "config.json").exists()


def _one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["--db", "postgresql://lv:s3cret@127.0.0.1:5432/test"], "PGPASSWORD"),
        (["--db", "postgresql://lv@127.0.0.1:5432/test?password=s3cret"], "PGPASSWORD"),
        (["--objects", "s3://AKIAXXXX:s3cret@bucket/prefix"], "AWS_ACCESS_KEY_ID"),
        (["--objects", "s3://bucket/prefix?secret=s3cret"], "AWS_ACCESS_KEY_ID"),
    ],
)
def test_credentials_in_a_url_are_refused(cli: Cli, project: Path, args: list[str], variable: str) -> None:
    proc = cli("init", *args, expect=2)
    assert "keep credentials out of the URL" in _one_error(proc.stderr)
    assert variable in proc.stderr
    assert "s3cret" not in proc.stderr
    _no_config(project)


def test_a_bucket_that_does_not_exist_is_not_found(cli: Cli, project: Path, s3env: dict[str, str]) -> None:
    proc = cli("init", "--objects", "s3://no-such-bucket-here/prefix", env=s3env, expect=3)
    assert "no-such-bucket-here" in _one_error(proc.stderr)
    _no_config(project)


def test_an_unreachable_endpoint_or_database_is_exit_7(cli: Cli, project: Path, s3env: dict[str, str]) -> None:
    down = {**s3env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    proc = cli("init", "--objects", "s3://bucket/prefix", env=down, expect=7, timeout=60)
    _one_error(proc.stderr)
    _no_config(project)
    proc = cli("init", "--db", "postgresql://postgres@127.0.0.1:9/test", expect=7, timeout=60)
    assert "database" in _one_error(proc.stderr)


def test_a_store_from_a_newer_labvault_is_refused_naming_its_version(
    cli: Cli, project: Path, s3_server: S3Server, s3env: dict[str, str]
) -> None:
    bucket = s3_server.bucket()
    marker = json.dumps({"format": "labvault.objects", "version": 99}).encode()
    s3_server.client().put_object(Bucket=bucket, Key="team/labvault-objects.json", Body=marker)
    proc = cli("init", "--objects", f"s3://{bucket}/team", env=s3env, expect=2)
    assert "99" in _one_error(proc.stderr)
    _no_config(project)


def test_join_config_and_show(cli: Cli, project: Path, s3_server: S3Server, s3env: dict[str, str]) -> None:
    bucket = s3_server.bucket()
    (project / "labvault.yaml").write_text(f"vault:\n  objects: s3://{bucket}/team\n  cache_size: 2GiB\n")
    assert "team vault" in cli("init", "--join", env=s3env).stdout
    assert cli("config", "get", "objects.cache_size", env=s3env).stdout.strip() == str(2 * 1024**3)
    cli("config", "set", "objects.cache_size", "5GiB", env=s3env)
    listed = {d["key"]: d["value"] for d in json.loads(cli("config", "list", "--json", env=s3env).stdout)}
    assert listed["objects.cache_size"] == 5 * 1024**3
    assert listed["objects.url"] == f"s3://{bucket}/team"
    (project / "f.txt").write_text("hello\n")
    cli("data", "add", "f", "f.txt", env=s3env)
    show = json.loads(cli("vault", "show", "--json", env=s3env).stdout)
    assert show["objects"] == f"s3://{bucket}/team"
    assert show["object_count"] >= 2  # the file and its manifest
    assert show["cache"]["size"] == 5 * 1024**3
    assert "s3://" in cli("vault", "show", env=s3env).stdout
    cli("config", "set", "objects.url", "s3://other/x", env=s3env, expect=2)
    cli("config", "set", "objects.cache_size", "lots", env=s3env, expect=2)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("vault: [1, 2]\n", "not a mapping"),
        ("vault:\n  db: postgresql://u:pw@h/db\n", "keep credentials out of the URL"),
        ("vault:\n  objects: s3://b/p\n  colour: red\n", "unknown key"),
        ("models: {}\n", "no vault: section"),
        ("vault:\n  objects: s3://b/p\n  cache_size: huge\n", "invalid size"),
    ],
)
def test_join_refuses_a_bad_vault_section(cli: Cli, project: Path, yaml_text: str, expected: str) -> None:
    (project / "labvault.yaml").write_text(yaml_text)
    proc = cli("init", "--join", expect=2)
    assert expected in _one_error(proc.stderr)
    _no_config(project)


def test_a_credential_already_in_config_json_warns_on_every_command(cli: Cli, project: Path) -> None:
    cli("init")
    path = project / ".labvault" / "config.json"
    doc = json.loads(path.read_text())
    doc["database_url"] = "postgresql+psycopg://lv:s3cret@127.0.0.1:9/test"
    path.write_text(json.dumps(doc))
    for args in (["config", "list"], ["vault", "show"]):
        proc = cli(*args, expect=None)
        assert "warning: config.json database_url holds a credential" in proc.stderr
        assert "PGPASSWORD" in proc.stderr
        assert "s3cret" not in proc.stderr + proc.stdout


def test_a_local_vault_shows_its_folder(cli: Cli, project: Path) -> None:
    cli("init")
    show = json.loads(cli("vault", "show", "--json").stdout)
    assert show["team"] is False
    assert show["objects"].endswith("objects")
    assert show["metadata"].endswith("meta.db")
    assert show["format_version"] >= 2
