"""open_object_store: a location (a path or a URL) to the object store it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from labvault.errors import NotFound, ValidationError
from labvault.storage.objects.local import LocalObjectStore
from labvault.storage.objects.opener import open_object_store
from labvault.storage.objects.remote import FsspecObjectStore


def test_a_plain_path_and_a_file_url_open_the_local_store(tmp_path: Path) -> None:
    by_path = open_object_store(tmp_path / "objs")
    assert isinstance(by_path, LocalObjectStore)
    digest = by_path.put_bytes(b"local bytes")
    for location in (str(tmp_path / "objs"), f"file://{tmp_path / 'objs'}", (tmp_path / "objs").as_uri()):
        again = open_object_store(location, create=False)
        assert isinstance(again, LocalObjectStore)
        assert again.get_bytes(digest) == b"local bytes"
    assert (tmp_path / "objs" / "objects" / "packs").is_dir()  # packs and locks, as a vault's own store


def test_a_missing_local_store_is_not_found_without_create(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as err:
        open_object_store(tmp_path / "nowhere", create=False)
    assert err.value.exit_code == 3


def test_memory_url_opens_an_fsspec_store(tmp_path: Path) -> None:
    store = open_object_store(f"memory://{tmp_path.name}/opener", cache_dir=tmp_path / "cache", cache_size=1 << 20)
    assert isinstance(store, FsspecObjectStore)
    assert store.get_bytes(store.put_bytes(b"in memory")) == b"in memory"


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("ftp://host/objects", "unknown object store scheme 'ftp'"),
        ("http://host/objects", "unknown object store scheme 'http'"),
        ("file://otherhost/objects", "must be local"),
        ("s3://AKIA:secret@bucket/prefix", "keep credentials out of the URL"),
        ("s3:///prefix", "names no bucket"),
    ],
)
def test_bad_locations_are_exit_2(location: str, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        open_object_store(location)
    assert err.value.exit_code == 2
    assert words in str(err.value)
    assert "secret" not in str(err.value)
    assert err.value.hint


def test_credentials_hint_names_the_variables() -> None:
    with pytest.raises(ValidationError) as err:
        open_object_store("s3://user:pw@bucket/x")
    assert "AWS_ACCESS_KEY_ID" in err.value.hint


def test_a_file_in_place_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValidationError):
        open_object_store(tmp_path / "f")


def test_negative_cache_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        open_object_store(tmp_path, cache_size=-1)
