"""data import: S3 through a moto server on loopback, HTTP through a local server, local paths."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from pathlib import Path

import pytest

from labvault.errors import NotFound, ValidationError
from labvault.vault import Vault
from tests.s3server import S3Server

from .conftest import write_tree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_endpoint(s3_server: S3Server) -> str:
    return s3_server.endpoint


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import boto3
    import fsspec.config

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_endpoint})
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    name = f"b{_free_port()}"
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="ds/train.csv", Body=b"a,b\n1,2\n3,4\n")
    client.put_object(Bucket=name, Key="ds/sub/x.bin", Body=b"\x00" * 64)
    client.put_object(Bucket=name, Key="single.txt", Body=b"hello")
    return name


def test_import_s3_folder_and_file(vault: Vault, bucket: str) -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    snap, created = vault.data.import_("remote", f"s3://{bucket}/ds")
    assert created
    assert snap.storage_uri == f"s3://{bucket}/ds" == snap.source_url
    assert snap.source_version is not None
    assert snap.source_version.startswith("sha256:")
    manifest = vault.data.get(snap.ref)
    assert {f.path: f.record_count for f in manifest.files} == {"train.csv": 2, "sub/x.bin": None}
    again, created = vault.data.import_("remote", f"s3://{bucket}/ds")
    assert not created
    assert again.ref == snap.ref
    one, _ = vault.data.import_("one", f"s3://{bucket}/single.txt")
    assert one.kind == "file"
    assert one.source_version
    with vault.data.open(one.ref, "single.txt") as f:
        assert f.read() == b"hello"
    assert vault.maintenance.fsck().clean
    assert not list((vault.dir / "tmp").glob("import-*"))


def test_import_missing_s3_key(vault: Vault, bucket: str) -> None:
    with pytest.raises(NotFound):
        vault.data.import_("remote", f"s3://{bucket}/nope.csv")


def test_import_http(vault: Vault, tmp_path: Path) -> None:
    write_tree(tmp_path / "www", {"data.jsonl": '{"a": 1}\n{"a": 2}\n'})
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/data.jsonl"
        snap, _ = vault.data.import_("web", url)
        assert snap.source_url == url
        assert vault.data.get(snap.ref).files[0].record_count == 2
    finally:
        server.shutdown()
        server.server_close()


def test_import_local_path_and_bad_urls(vault: Vault, tmp_path: Path) -> None:
    write_tree(tmp_path / "outside", {"a.txt": "a"})
    snap, _ = vault.data.import_("local", str(tmp_path / "outside"))
    assert snap.file_count == 1
    with pytest.raises(ValidationError):
        vault.data.import_("x", "nosuchproto://host/path")
    with pytest.raises(NotFound):
        vault.data.import_("x", str(tmp_path / "missing"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
