"""The pipeline definition, the graph, stage keys, the caches: service level (no subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labvault.errors import ValidationError
from labvault.services.pipelines.dag import build_graph
from labvault.services.pipelines.hashing import HashCache
from labvault.services.pipelines.plan import stage_key
from labvault.services.pipelines.spec import Stage, load_pipeline
from labvault.services.pipelines.speccache import cached_pipeline
from labvault.services.snapshots.lockfile import read_stages, update_stages
from labvault.vault import Vault


def _write(root: Path, text: str, params: str = "") -> None:
    (root / "labvault.yaml").write_text(text)
    if params:
        (root / "params.yaml").write_text(params)


def test_matrix_wdir_params_and_interpolation(project: Path) -> None:
    _write(
        project,
        """\
params: p.yaml
stages:
  ev:
    matrix: {split: [val, test], k: [1, 2]}
    wdir: sub
    cmd: run ${item.split} ${item.k}
    deps: ["in_${item.split}.txt", "../shared.txt"]
    params: [ev.top, "other.yaml:x.y", {other.yaml: [z]}]
    outs: ["out/${item.split}-${item.k}.json"]
""",
    )
    (project / "p.yaml").write_text("ev:\n  top: 3\n")
    (project / "other.yaml").write_text("x:\n  y: [1, 2]\nz: hello\n")
    pipeline = load_pipeline(project)
    assert list(pipeline.stages) == ["ev@val-1", "ev@val-2", "ev@test-1", "ev@test-2"]
    st = pipeline.stages["ev@test-2"]
    assert st.cmd == "run test 2"
    assert st.wdir == "sub"
    assert st.deps == ("sub/in_test.txt", "shared.txt")
    assert st.outs == ("sub/out/test-2.json",)
    assert st.params == {"other.yaml:x.y": [1, 2], "other.yaml:z": "hello", "p.yaml:ev.top": 3}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("stages:\n  a:\n    cmd: 3\n", "labvault.yaml:3: stages.a.cmd"),
        ("stages:\n  a:\n    outs: [x]\n", "labvault.yaml:2: stages.a.cmd: is required"),
        ("stages:\n  a:\n    cmd: x ${item.nope}\n", "${item.nope} names no matrix key"),
        ("stages:\n  a@b:\n    cmd: x\n", "is not a valid stage name"),
        ("stages:\n  a:\n    cmd: x\n    env: keep\n", "labvault.yaml:4: stages.a.env"),
        ("stages: [a]\n", "stages: must be a mapping"),
        ("stages:\n  a:\n    cmd: x\n    outs: [/etc/x]\n", "is outside the project"),
        ("stages:\n  a:\n    cmd: x\n    deps: [o]\n    outs: [o]\n", "the stages form a cycle: a -> a"),
    ],
)
def test_definition_errors_name_file_line_and_key(project: Path, text: str, words: str) -> None:
    _write(project, text)
    with pytest.raises(ValidationError) as err:
        load_pipeline(project)
    assert words in err.value.message


def test_graph_edges_from_outputs_to_deps_and_folders() -> None:
    stages = {
        "a": Stage("a", "x", outs=("data/a",)),
        "b": Stage("b", "x", deps=("data/a/part.csv",), outs=("b.txt",)),  # inside a's output
        "c": Stage("c", "x", deps=("data",), outs=("c.txt",)),  # a folder holding a's output
        "d": Stage("d", "x", deps=("b.txt", "c.txt"), outs=("d.txt",)),
    }
    up = build_graph(stages)
    assert up == {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    with pytest.raises(ValidationError, match="the stages form a cycle: "):
        build_graph({**stages, "a": Stage("a", "x", deps=("d.txt",), outs=("data/a",))})


def test_stage_key_covers_command_deps_params_outs_and_env() -> None:
    base = Stage("s", "cmd", deps=("a",), outs=("o",), params={"params.yaml:x": 1})
    k = stage_key(base, {"a": "sha256:" + "0" * 64}, "sha256:env")
    variants = [
        stage_key(
            Stage("s", "cmd2", deps=("a",), outs=("o",), params={"params.yaml:x": 1}),
            {"a": "sha256:" + "0" * 64},
            "sha256:env",
        ),
        stage_key(base, {"a": "sha256:" + "1" * 64}, "sha256:env"),
        stage_key(
            Stage("s", "cmd", deps=("a",), outs=("o",), params={"params.yaml:x": 2}),
            {"a": "sha256:" + "0" * 64},
            "sha256:env",
        ),
        stage_key(
            Stage("s", "cmd", deps=("a",), outs=("p",), params={"params.yaml:x": 1}),
            {"a": "sha256:" + "0" * 64},
            "sha256:env",
        ),
        stage_key(base, {"a": "sha256:" + "0" * 64}, "sha256:env2"),
        stage_key(base, {"a": "sha256:" + "0" * 64}, None),
    ]
    assert len({k, *variants}) == 7
    assert stage_key(base, {"a": "sha256:" + "0" * 64}, "sha256:env") == k


def test_spec_cache_answers_until_a_file_changes(vault: Vault) -> None:
    root = vault.root
    _write(root, "stages:\n  a:\n    cmd: x\n    params: [p]\n", "p: 1\n")
    first = cached_pipeline(root, vault.dir)
    assert first.stages["a"].params == {"params.yaml:p": 1}
    (root / "params.yaml").write_text("p: 22\n")  # another size: another stat
    assert cached_pipeline(root, vault.dir).stages["a"].params == {"params.yaml:p": 22}
    cache = vault.dir / "cache" / "pipelines" / "spec.json"
    doc = json.loads(cache.read_text())
    doc["body"]["stages"][0]["cmd"] = "tampered"
    cache.write_text(json.dumps(doc))  # the checksum no longer verifies: parsed again
    assert cached_pipeline(root, vault.dir).stages["a"].cmd == "x"


def test_hash_cache_folders_and_racy_entries(vault: Vault) -> None:
    root = vault.root
    (root / "d").mkdir()
    (root / "d" / "x.txt").write_text("x")
    hashes = HashCache(root, vault.dir)
    first = hashes.digest("d")
    assert first is not None
    assert first.startswith("sha256:")
    hashes.save()
    (root / "d" / "x.txt").write_text("y")  # same size, same second: the stat key still differs
    again = HashCache(root, vault.dir)
    assert again.digest("d") != first
    assert again.digest("missing") is None


def test_lock_stages_are_validated(vault: Vault) -> None:
    root = vault.root
    good = {
        "cmd": "x",
        "deps": {},
        "env": None,
        "key": "sha256:" + "a" * 64,
        "outs": {"o": "sha256:" + "b" * 64},
        "params": {},
    }
    update_stages(root, vault.dir, {"s": good})
    assert read_stages(root) == {"s": good}
    doc = json.loads((root / "labvault.lock").read_text())
    doc["stages"]["s"]["outs"] = {"../escape": "sha256:" + "b" * 64}
    (root / "labvault.lock").write_text(json.dumps(doc))
    with pytest.raises(ValidationError, match="is malformed"):
        read_stages(root)


@pytest.mark.parametrize(
    "change",
    [
        {"trees": 5},
        {"outs": {"o": 5}},
        {"key": None},
        {"deps": {"/abs": "sha256:" + "c" * 64}},
        {"wdir": ["x"]},
    ],
)
def test_hostile_lock_stage_entries_are_refused(vault: Vault, change: dict) -> None:
    root = vault.root
    entry = {"cmd": "x", "deps": {}, "env": None, "key": "sha256:" + "a" * 64, "outs": {}, "params": {}, **change}
    (root / "labvault.lock").write_text(json.dumps({"format": "labvault.lock/2", "stages": {"s": entry}}))
    with pytest.raises(ValidationError, match="is malformed"):
        read_stages(root)
