"""The one loader of YAML and JSON files: limits, and errors that name the file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from labvault.errors import ValidationError
from labvault.safeload import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    load_json,
    load_yaml,
    loads_json,
    loads_yaml,
)


def test_plain_documents_load(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("a: 1\nb: [x, 2.5, null, true]\nc: {d: e}\n")
    assert load_yaml(tmp_path / "p.yaml") == {"a": 1, "b": ["x", 2.5, None, True], "c": {"d": "e"}}
    (tmp_path / "p.json").write_text('{"a": [1, {"b": NaN}]}')
    doc = load_json(tmp_path / "p.json")
    assert doc["a"][0] == 1
    assert loads_yaml("", name="empty.yaml") is None
    assert loads_yaml("base: &b {x: 1}\nuse: *b\n", name="a.yaml") == {"base": {"x": 1}, "use": {"x": 1}}


def test_missing_files_are_left_to_the_caller(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_yaml(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError):
        load_json(tmp_path / "nope.json")


def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_bomb(8), "bomb.yaml:5: aliases expand to more than"),
        (_bomb(30), "bomb.yaml:5: aliases expand to more than"),
        ("a: &a [1, *a]\n", "bomb.yaml:1: an alias refers to a node that contains it"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "bomb.yaml:1: nested more than 100 deep"),
        # libyaml stops at its own limit (1,000 levels) before this one: either way, a line naming the file.
        ("[" * 100_000 + "]" * 100_000, "bomb.yaml:1: "),
        # Depth reached only through aliases: a chain of anchors, each one level deeper.
        (
            "".join(f"a{i}: &a{i} [{'*a' + str(i - 1) if i else 1}]\n" for i in range(150)),
            "bomb.yaml:101: nested more than 100 deep once aliases are expanded",
        ),
        ("a: !!python/object/apply:os.system [echo hi]\n", "bomb.yaml:1: could not determine a constructor"),
        ("a: [1, 2\n", "bomb.yaml:2: YAML syntax error"),
        ("a: 1\n---\nb: 2\n", "bomb.yaml:2: expected a single document"),
        (b"a: \xff\n", "bomb.yaml: not UTF-8 text"),
    ],
)
def test_hostile_yaml_is_refused_quickly(text: str | bytes, expected: str) -> None:
    started = time.monotonic()
    with pytest.raises(ValidationError) as err:
        loads_yaml(text, name="bomb.yaml")
    assert time.monotonic() - started < 2
    assert err.value.message.startswith(expected), err.value.message
    assert err.value.exit_code == 2


def test_large_flat_documents_are_bounded_in_nodes_and_time() -> None:
    within = "a: [" + ", ".join(["1"] * (MAX_NODES - 10)) + "]\n"
    started = time.monotonic()
    assert len(loads_yaml(within, name="ok.yaml")["a"]) == MAX_NODES - 10
    beyond = "a: [" + ", ".join(["1"] * (MAX_NODES + 1)) + "]\n"
    with pytest.raises(ValidationError, match=r"^big.yaml:1: more than 500000 nodes"):
        loads_yaml(beyond, name="big.yaml")
    # With PyYAML's own composer, 200,000 items took 11 s to compose on a loaded 2-core machine.
    assert time.monotonic() - started < 60


def test_the_alias_budget_is_exact_enough() -> None:
    # 10 aliases of a 10,000-node list add 90,000 nodes: within the budget; 11 of them are not.
    body = "big: &big [" + ", ".join(["1"] * 9_999) + "]\n"
    assert len(loads_yaml(body + "use: [" + ", ".join(["*big"] * 9) + "]\n", name="ok.yaml")["use"]) == 9
    assert MAX_ALIAS_NODES == 100_000
    with pytest.raises(ValidationError, match="aliases expand"):
        loads_yaml(body + "use: [" + ", ".join(["*big"] * 11) + "]\n", name="no.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": [1, 2}', "bad.json:1: invalid JSON"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "bad.json: nested more than 100 deep"),
        ("[" * 1_000_000, "bad.json: nested more than 100 deep"),
        ("1" * 5000, "bad.json: invalid JSON"),
        (b'{"a": "\xff"}', "bad.json: not UTF-8 text"),
    ],
)
def test_hostile_json_is_refused(text: str | bytes, expected: str) -> None:
    with pytest.raises(ValidationError) as err:
        loads_json(text, name="bad.json")
    assert err.value.message.startswith(expected), err.value.message


def test_nesting_up_to_the_limit_loads() -> None:
    deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads_json(deep, name="ok.json") is not None
    assert loads_yaml(deep, name="ok.yaml") is not None


def test_files_over_10_mib_are_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" + b"#" * MAX_FILE_BYTES)
    with pytest.raises(ValidationError, match=r"^big.yaml is larger than 10 MiB"):
        load_yaml(big, name="big.yaml")
    with pytest.raises(ValidationError, match=r"is larger than 10 MiB"):
        load_json(big)


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    # A device never ends; a FIFO without a writer blocks its reader forever.
    os.symlink("/dev/zero", tmp_path / "zero.json")
    with pytest.raises(ValidationError, match=r"zero.json is not a regular file"):
        load_json(tmp_path / "zero.json")
    os.mkfifo(tmp_path / "labvault.yaml")
    started = time.monotonic()
    with pytest.raises(ValidationError, match=r"labvault.yaml is not a regular file"):
        load_yaml(tmp_path / "labvault.yaml", name="labvault.yaml")
    assert time.monotonic() - started < 2
    (tmp_path / "real.yaml").write_text("a: 1\n")
    os.symlink("real.yaml", tmp_path / "link.yaml")
    assert load_yaml(tmp_path / "link.yaml") == {"a": 1}  # a link to a file is followed: the user made it


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="is a folder"):
        load_yaml(tmp_path)


@pytest.mark.parametrize("text", ["a: 1\nb: [x, {c: d}]\n", "base: &b {x: 1}\nuse: *b\n", _bomb(8), "a: &a [1, *a]\n"])
def test_pure_python_parsing_gives_the_same_answers(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Without libyaml, PyYAML's own parser feeds the same composer."""
    import yaml

    def load() -> object:
        try:
            return loads_yaml(text, name="f.yaml")
        except ValidationError as err:
            return err.message

    with_c = load()
    monkeypatch.setattr(yaml, "__with_libyaml__", False)
    assert load() == with_c
