"""The reference grammar: parse/format round trips, and names validated at the boundary."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labvault.errors import ValidationError
from labvault.refs import (
    MAX_NAME_LENGTH,
    MAX_VERSION_PART,
    DataRef,
    Digest,
    DigestRef,
    ModelRef,
    RunRef,
    format_ref,
    parse_digest,
    parse_ref,
    parse_semver,
    validate_name,
)

HEX = "0123456789abcdef"

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True).filter(lambda s: ".." not in s)
aliases = st.from_regex(r"[A-Za-z][A-Za-z0-9._-]{0,30}", fullmatch=True).filter(lambda s: ".." not in s)
run_ids = st.text(HEX, min_size=6, max_size=32)
data_versions = st.integers(1, 10**9).map(lambda n: f"v{n}")
semvers = st.tuples(*[st.integers(0, 10**6)] * 3).map(lambda t: ".".join(map(str, t)))
full_hex = st.binary(max_size=64).map(lambda b: hashlib.sha256(b).hexdigest())

refs = st.one_of(
    run_ids.map(RunRef),
    st.builds(DataRef, names, st.none() | data_versions),
    st.builds(ModelRef, names, names, st.none() | semvers | aliases),
    full_hex.map(DigestRef),
    st.tuples(full_hex, st.integers(8, 64)).map(lambda t: DigestRef(t[0][: t[1]])),
)


@given(refs)
def test_every_reference_round_trips(ref: RunRef | DataRef | ModelRef | DigestRef) -> None:
    text = format_ref(ref)
    assert parse_ref(text) == ref
    assert format_ref(parse_ref(text)) == text
    assert parse_ref(f"  {text}\n") == ref  # surrounding whitespace from shells and files is ignored


@given(run_ids)
def test_run_ids_are_case_insensitive_and_printed_lower(run_id: str) -> None:
    assert parse_ref(f"run:{run_id.upper()}") == RunRef(run_id)


@given(names, data_versions)
def test_data_ref_parts(name: str, version: str) -> None:
    ref = parse_ref(f"data:{name}@{version}", expect=DataRef)
    assert isinstance(ref, DataRef)
    assert (ref.name, ref.version, ref.number) == (name, version, int(version[1:]))
    latest = parse_ref(f"data:{name}")
    assert isinstance(latest, DataRef)
    assert latest.version is None
    assert latest.number is None


@given(names, names, semvers, aliases)
def test_model_ref_versions_and_aliases(project: str, model: str, version: str, alias: str) -> None:
    by_version = parse_ref(f"{project}/{model}@{version}")
    by_alias = parse_ref(f"{project}/{model}@{alias}")
    assert isinstance(by_version, ModelRef)
    assert isinstance(by_alias, ModelRef)
    assert not by_version.is_alias
    assert by_alias.is_alias
    assert by_version.name == by_alias.name == f"{project}/{model}"


@given(full_hex, st.integers(8, 64))
def test_sha256_full_and_prefix(hexd: str, length: int) -> None:
    full = parse_ref(f"sha256:{hexd}")
    assert isinstance(full, DigestRef)
    assert full.is_full
    assert str(Digest(hexd)) == f"sha256:{hexd}"
    assert Digest(hexd).short == hexd[:12]
    prefix = parse_ref(f"sha256:{hexd[:length].upper()}")
    assert prefix == DigestRef(hexd[:length])
    assert prefix.is_full == (length == 64)
    assert parse_digest(hexd[:length]) == DigestRef(hexd[:length])  # the bare hex form, as `object cat` takes


@given(full_hex, st.integers(0, 7))
def test_sha256_prefix_shorter_than_8_is_refused(hexd: str, length: int) -> None:
    with pytest.raises(ValidationError, match=r"too short|not a sha256"):
        parse_ref(f"sha256:{hexd[:length]}")


@pytest.mark.parametrize(
    "text",
    [
        "sha256:xyz12345678",
        "sha256:" + "a" * 65,
        "sha256:abcdef12\n",  # a trailing newline must not slip past the hex check
        "sha256:abcdef12 ",
        "sha256:abcd-ef1234",
    ],
)
def test_malformed_digests_are_refused(text: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_digest(text)
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "run:",
        "run:12345",  # too short
        "run:" + "a" * 33,
        "run:xyz123",
        "run:abcdef\nrun:abcdef",
        "data:",
        "data:x@",
        "data:x@3",
        "data:x@v0",
        "data:x@v01",
        "data:../etc@v1",
        "data:a/b@v1",
        "proj/model@",
        "proj/model@1.2",
        "proj/model@01.2.3",
        "proj/model@1.2.3.4",
        "proj/mo/del@1.0.0",
        "/model@1.0.0",
        "proj/@1.0.0",
        "../model@1.0.0",
        "proj/model@../prod",
        "just-a-name",
        "SHA256:abcdef12",
    ],
)
def test_bad_references_are_exit_2(text: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_ref(text)
    assert err.value.exit_code == 2
    assert "\n" not in str(err.value)
    assert err.value.hint


def test_expect_refuses_other_forms_with_the_wanted_form_named() -> None:
    with pytest.raises(ValidationError, match=r"expected run:<id>") as err:
        parse_ref("data:x@v1", expect=RunRef)
    assert err.value.exit_code == 2
    with pytest.raises(ValidationError, match=r"run:<id> or sha256:<hex>"):
        parse_ref("p/m@1.0.0", expect=(RunRef, DigestRef))
    assert parse_ref("run:abcdef", expect=(RunRef, DigestRef)) == RunRef("abcdef")


@pytest.mark.parametrize("bad", ["0" * 63, "0" * 65, "G" * 64, "A" * 64, ""])
def test_digest_requires_64_lowercase_hex(bad: str) -> None:
    with pytest.raises(ValidationError):
        Digest(bad)


# -- names ------------------------------------------------------------------------------------


@given(names)
def test_valid_names_pass_unchanged(name: str) -> None:
    assert validate_name(name) == name


def test_name_length_is_bounded() -> None:
    assert validate_name("a" * MAX_NAME_LENGTH) == "a" * MAX_NAME_LENGTH
    with pytest.raises(ValidationError, match="limit is 128") as err:
        validate_name("a" * (MAX_NAME_LENGTH + 1))
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    "bad",
    ["", "a/b", "a\\b", "..", "a..b", "..a", ".", ".hidden", "-flag", "_x", "a b", "é", "a:b", "a@b", "a*"],
)
def test_unsafe_names_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_name(bad, what="dataset name")
    assert err.value.exit_code == 2
    assert err.value.hint


@given(names, st.sampled_from(["/", "\\", "..", "\x00", "\n", "\t", "\x1b", "\x7f"]), names)
def test_separators_dotdot_and_control_characters_are_refused_anywhere(left: str, bad: str, right: str) -> None:
    for candidate in (bad + left, left + bad, left + bad + right):
        with pytest.raises(ValidationError) as err:
            validate_name(candidate)
        assert err.value.exit_code == 2
        assert "\n" not in str(err.value)  # the one-line rule holds even for a name holding a newline


@given(st.text(max_size=200))
def test_validate_name_never_accepts_anything_path_like(text: str) -> None:
    try:
        validate_name(text)
    except ValidationError:
        return
    assert 0 < len(text) <= MAX_NAME_LENGTH
    assert not any(bad in text for bad in ("/", "\\", ".."))
    assert all(32 <= ord(c) < 127 for c in text)
    assert text[0].isalnum()


@pytest.mark.parametrize(
    "version",
    [
        "99999999999999999999.0.0",  # used to reach the database: OverflowError, a traceback
        "0.9223372036854775808.0",
        "0.0." + "9" * 5000,  # past int()'s 4,300-digit limit
    ],
)
def test_version_parts_beyond_64_bits_are_refused(version: str) -> None:
    with pytest.raises(ValidationError, match="larger than") as err:
        parse_ref(f"fraud/detector@{version}")
    assert err.value.exit_code == 2
    assert len(str(err.value)) < 300
    with pytest.raises(ValidationError, match="larger than"):
        parse_semver(version)


def test_the_largest_version_parses() -> None:
    top = f"{MAX_VERSION_PART}.{MAX_VERSION_PART}.{MAX_VERSION_PART}"
    assert parse_semver(top) == (2**63 - 1,) * 3
    assert parse_ref(f"fraud/detector@{top}") == ModelRef("fraud", "detector", top)


@pytest.mark.parametrize("version", ["v9223372036854775808", "v99999999999999999999", "v" + "9" * 5000])
def test_data_versions_beyond_64_bits_are_refused(version: str) -> None:
    # Used to reach the database: OverflowError, a traceback.
    with pytest.raises(ValidationError, match="larger than") as err:
        parse_ref(f"data:raw@{version}")
    assert len(err.value.message) < 300
    assert parse_ref("data:raw@v9223372036854775807") == DataRef("raw", "v9223372036854775807")
