"""record_builder: the entity it builds from positional values is the one the dataclass would."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from labvault.entities import Artifact, Run
from labvault.refs import Digest
from labvault.storage.meta.builders import record_builder

_ART = Artifact("model.pt", Digest("a" * 64), "file", 3, "out/model.pt")
_VALUES = {
    "id": "3f9c2a1b7d4e",
    "project": "fraud",
    "name": "baseline",
    "status": "finished",
    "started_at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    "ended_at": datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC),
    "params": {"depth": 4},
    "metrics": {"auc": 0.93},
    "tags": {"team": "risk"},
    "inputs": ("data:tx@v1",),
    "outputs": (_ART,),
    "artifacts": (_ART,),
    "parent_id": "000000000001",
    "user": "ana@example.com",
    "host": "gpu-1",
    "exit_code": 0,
    "error": None,
    "seed": 7,
    "deleted_at": None,
    "capture": {"git": {"commit": "abc"}},
}


def test_the_built_run_equals_the_constructed_one_in_any_field_order() -> None:
    order = sorted(_VALUES, reverse=True)  # not the declaration order
    built = record_builder(Run, order)(*(_VALUES[name] for name in order))
    assert type(built) is Run
    assert built == Run(**_VALUES)  # type: ignore[arg-type]
    assert {f.name: getattr(built, f.name) for f in dataclasses.fields(Run)} == _VALUES
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.name = "changed"  # type: ignore[misc]


def test_a_field_left_out_or_named_twice_is_refused_at_once() -> None:
    names = [f.name for f in dataclasses.fields(Run)]
    with pytest.raises(TypeError, match="fields"):
        record_builder(Run, names[:-1])
    with pytest.raises(TypeError, match="fields"):
        record_builder(Run, [*names[:-1], names[0]])


def test_a_dataclass_with_a_check_in_post_init_is_refused() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        size: int

        def __post_init__(self) -> None:
            if self.size < 0:
                raise ValueError("negative")

    with pytest.raises(TypeError, match="__post_init__"):
        record_builder(Checked, ["size"])
