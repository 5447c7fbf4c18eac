"""data diff: files, schema, record counts, column drift; the PSI known answer."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from labvault.services.snapshots.drift import PSI_EPSILON, CategoricalStats, NumericStats, psi
from labvault.vault import Vault

from .conftest import write_tree


def test_psi_known_answer() -> None:
    # A = 0..999: deciles 100, 200, ..., 900, so each of A's 10 bins holds 10%.
    # B = 500..1499: bins 0-4 are empty (smoothed to 1e-4), bins 5-8 hold 10%, bin 9 holds 60%.
    expected = 5 * (PSI_EPSILON - 0.1) * math.log(PSI_EPSILON / 0.1) + (0.6 - 0.1) * math.log(0.6 / 0.1)
    value = psi(range(1000), range(500, 1500))
    assert value == pytest.approx(expected, rel=1e-12)
    assert value == pytest.approx(4.3463035, abs=1e-6)


def test_psi_of_identical_distributions_is_zero() -> None:
    values = [random.Random(3).random() for _ in range(5000)]
    assert psi(values, values) == pytest.approx(0.0, abs=1e-12)
    assert psi([], values) is None


def test_numeric_and_categorical_stats() -> None:
    n = NumericStats()
    for v in ["1", "2", None, "3", "x"]:
        n.add(v)
    assert n.to_json() == {
        "count": 3,
        "nulls": 2,
        "mean": 2.0,
        "std": pytest.approx(math.sqrt(2 / 3)),
        "min": 1.0,
        "max": 3.0,
    }
    c = CategoricalStats()
    for v in ["a", "a", "b", None]:
        c.add(v)
    doc = c.to_json()
    assert doc["null_rate"] == 0.25
    assert doc["distinct"] == 2
    assert doc["top"][0] == {"value": "a", "frequency": pytest.approx(2 / 3)}


def _csv(rows: int, *, shift: float, seed: int, extra: bool = False) -> str:
    r = random.Random(seed)
    head = "x,colour,n" + (",extra" if extra else "")
    lines = [head]
    for i in range(rows):
        line = f"{r.gauss(shift, 1):.6f},{r.choice(['red', 'blue'] if not extra else ['red', 'green'])},{i}"
        lines.append(line + (",1" if extra else ""))
    return "\n".join(lines) + "\n"


def test_diff_reports_files_schema_counts_and_drift(vault: Vault, project: Path) -> None:
    d = write_tree(project / "d", {"t.csv": _csv(2000, shift=0, seed=1), "same/a.txt": "a", "gone.txt": "g"})
    vault.data.add("d", d)
    (d / "gone.txt").unlink()
    write_tree(d, {"t.csv": _csv(2500, shift=1.0, seed=2, extra=True), "new.txt": "n"})
    vault.data.add("d", d)
    result = vault.data.diff("data:d@v1", "data:d@v2")
    assert result.added == ("new.txt",)
    assert result.removed == ("gone.txt",)
    assert result.modified == ("t.csv",)
    assert result.schema_changed
    assert (result.record_count_before, result.record_count_after) == (2000, 2500)
    (t,) = result.tabular
    assert t.columns_added == ("extra",)
    assert (t.record_count_before, t.record_count_after) == (2000, 2500)
    cols = {c.column: c for c in t.columns}
    assert cols["x"].kind == "numeric"
    assert cols["x"].psi is not None
    assert cols["x"].psi > 0.5
    assert cols["n"].psi is not None
    assert cols["colour"].kind == "categorical"
    changes = {v: (a, b) for v, a, b in cols["colour"].top_changes}
    assert changes["blue"][1] == 0.0
    assert changes["green"][0] == 0.0
    assert result.max_psi is not None
    doc = result.to_json()
    assert doc["tabular"][0]["columns_added"] == ["extra"]


def test_diff_of_identical_snapshots_is_empty(vault: Vault, dataset: Path) -> None:
    snap, _ = vault.data.add("raw", dataset)
    result = vault.data.diff(snap.ref, snap.ref)
    assert not result.changed
    assert result.tabular == ()


def test_diff_across_datasets_and_retyped_columns(vault: Vault, project: Path) -> None:
    write_tree(project, {"a.csv": "k,v\n1,2\n", "b.csv": "k,v\n1,x\n"})
    vault.data.add("a", project / "a.csv")
    vault.data.add("b", project / "b.csv")
    result = vault.data.diff("data:a", "data:b")
    assert result.modified == ("a.csv",)
    assert result.tabular[0].columns_retyped == (("v", "int", "string"),)
