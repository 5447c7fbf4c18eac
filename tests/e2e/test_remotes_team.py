"""A team vault (PostgreSQL + S3 on a moto server) as a remote of two laptop vaults, through the executable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e.conftest import Cli
from tests.s3server import S3Server

pytestmark = pytest.mark.postgres


def test_push_to_and_pull_from_a_team_vault(
    project: Path, cli: Cli, tmp_path: Path, pg_url: str, s3_server: S3Server
) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **s3_server.env()}
    objects = f"s3://{s3_server.bucket()}/team"
    cli("init")
    data = project / "data" / "raw"
    data.mkdir(parents=True)
    for i in range(40):
        (data / f"f{i}.txt").write_text(f"row {i}\n" * (1 + i))
    (data / "big.bin").write_bytes(os.urandom(2 << 20))
    cli("data", "add", "raw", "data/raw")
    cli("remote", "add", "team", "--db", pg_url, "--objects", objects, "--default", env=env)
    listed = json.loads(cli("remote", "list", "--json").stdout)
    assert listed[0]["kind"] == "team"
    config = (project / ".labvault" / "config.json").read_text()
    assert "secret" not in config.lower()
    assert "AWS" not in config
    pushed = json.loads(cli("push", "--json", env=env).stdout)
    assert [(r["ref"], r["action"]) for r in pushed["records"]] == [("data:raw@v1", "new")]
    assert json.loads(cli("push", "--json", env=env).stdout)["objects"]["sent"] == 0

    laptop = tmp_path / "laptop"
    laptop.mkdir()
    cli("init", cwd=laptop)
    (laptop / "labvault.lock").write_text((project / "labvault.lock").read_text())
    cli("remote", "add", "team", "--db", pg_url, "--objects", objects, cwd=laptop, env=env)
    cli("pull", cwd=laptop, env=env)
    cli("data", "checkout", cwd=laptop)
    assert (laptop / "data" / "raw" / "big.bin").read_bytes() == (data / "big.bin").read_bytes()
    cli("fsck", cwd=laptop)


def test_team_remote_urls_with_credentials_are_refused(project: Path, cli: Cli) -> None:
    cli("init")
    bad = cli("remote", "add", "t", "--db", "postgresql://u:hunter2@h/db", "--objects", "s3://b/p", expect=2)
    assert "hunter2" not in bad.stderr
    bad = cli("remote", "add", "t", "--db", "postgresql://h/db", expect=2)
    assert "--objects" in bad.stderr
