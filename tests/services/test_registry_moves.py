"""Alias moves as one transaction: a failure after the move leaves nothing; a move that does not
happen is a lost race; the drift gate refuses through ``promote``; unset, re-register and resolve
behave as documented."""

from __future__ import annotations

import ast
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labvault.errors import Conflict
from labvault.services.registry import PromotionRefused
from labvault.services.registry import aliases as aliases_module
from labvault.storage.meta.repos import registry as repo
from labvault.storage.meta.repos import registry_history as history_repo
from labvault.vault import Vault
from tests.services.test_registry import make_model
from tests.services.test_registry_policy import register, write_policy


class Injected(RuntimeError):
    """The failure injected after the alias moved, before the transaction commits."""


def _state(vault: Vault) -> tuple[dict[str, str], list[tuple[str, str | None]], list[str], str]:
    head = (vault.root / ".labvault" / "audit-head").read_text()
    moves = [(m.action, m.after) for m in vault.registry.history("fraud/detector")]
    return vault.registry.aliases("fraud/detector"), moves, [e.action for e in vault.registry.audit.events()], head


def _two_versions_on_prod(vault: Vault, project: Path) -> tuple[str, str]:
    a = register(vault, project, 0.91)
    b = register(vault, project, 0.92)
    vault.registry.promote(a, "prod")
    return a, b


MOVES: dict[str, Callable[[Vault, str], Any]] = {
    "promote": lambda v, b: v.registry.promote(b, "prod"),
    "rollback": lambda v, b: v.registry.rollback("fraud/detector", "prod"),
    "unset": lambda v, b: v.registry.unset_alias("fraud/detector", "prod"),
}


@pytest.mark.parametrize("move", sorted(MOVES))
@pytest.mark.parametrize("fail_in", ["audit_event", "history_row"])
def test_a_failure_after_the_move_leaves_no_trace(
    any_vault: Vault, project: Path, monkeypatch: pytest.MonkeyPatch, move: str, fail_in: str
) -> None:
    """The alias move, its history row and its audit event commit together or not at all."""
    _, b = _two_versions_on_prod(any_vault, project)
    if move == "rollback":
        any_vault.registry.promote(b, "prod")
    before = _state(any_vault)
    moved: list[bool] = []
    real_move = repo.move_alias

    def move_alias(*args: Any, **kwargs: Any) -> bool:
        moved.append(real_move(*args, **kwargs))
        return moved[-1]

    def fail(*args: Any, **kwargs: Any) -> Any:
        assert moved == [True], "the failure must come after the alias moved"
        raise Injected("after the move")

    monkeypatch.setattr(repo, "move_alias", move_alias)
    if fail_in == "audit_event":
        monkeypatch.setattr(any_vault.registry.audit, "append", fail)
    else:
        monkeypatch.setattr(history_repo, "insert_move", fail)
    with pytest.raises(Injected):
        MOVES[move](any_vault, b)
    monkeypatch.undo()
    assert _state(any_vault) == before
    assert any_vault.registry.verify_audit().ok
    MOVES[move](any_vault, b)  # and the same move works once the fault is gone
    assert _state(any_vault) != before
    assert any_vault.registry.verify_audit().ok


def test_a_move_that_does_not_happen_is_a_lost_race(
    any_vault: Vault, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``move_alias`` reporting no row moved is a Conflict (exit 4), audited as a lost-race refusal."""
    _, b = _two_versions_on_prod(any_vault, project)
    monkeypatch.setattr(repo, "move_alias", lambda *a, **k: False)
    with pytest.raises(Conflict, match="lost the race") as info:
        any_vault.registry.promote(b, "prod")
    assert info.value.exit_code == 4
    monkeypatch.undo()
    refusal = any_vault.registry.audit.events()[-1]
    assert refusal.action == "refuse"
    assert "lost race" in refusal.details["refused"]
    assert any_vault.registry.resolve("fraud/detector@prod").version == "0.1.0"
    assert [m.after for m in any_vault.registry.history("fraud/detector", "prod")] == ["0.1.0"]
    assert any_vault.registry.verify_audit().ok


@pytest.mark.parametrize("move", ["rollback", "unset"])
def test_rollback_and_unset_that_do_not_move_are_conflicts(
    vault: Vault, project: Path, monkeypatch: pytest.MonkeyPatch, move: str
) -> None:
    _, b = _two_versions_on_prod(vault, project)
    vault.registry.promote(b, "prod")
    before = _state(vault)
    monkeypatch.setattr(repo, "move_alias", lambda *a, **k: False)
    with pytest.raises(Conflict, match="moved meanwhile"):
        MOVES[move](vault, b)
    monkeypatch.undo()
    assert _state(vault) == before


def _trained_on_drifted_data(vault: Vault, project: Path) -> str:
    rng = random.Random(1)
    data = project / "tx.csv"
    data.write_text("amount,label\n" + "".join(f"{rng.gauss(100, 10):.2f},{rng.randint(0, 1)}\n" for _ in range(400)))
    vault.data.add("tx", data)
    data.write_text("amount,label\n" + "".join(f"{rng.gauss(130, 10):.2f},{rng.randint(0, 1)}\n" for _ in range(400)))
    vault.data.add("tx", data)
    run = vault.runs.create(name="train", inputs=["data:tx@v2"], capture=False, background_git=False)
    vault.runs.log_artifact(run.id, make_model(project), name="model")
    vault.runs.finish(run.id)
    return vault.registry.register("fraud/detector", run=run.ref)[0].ref


def test_the_drift_gate_refuses_a_promotion(vault: Vault, project: Path) -> None:
    ref = _trained_on_drifted_data(vault, project)
    write_policy(
        project,
        "models:\n  fraud/detector:\n    prod:\n      rollback_plan: required\n"
        "      drift: {reference: 'data:tx@v1', max_psi: 0.2}\n",
    )
    with pytest.raises(PromotionRefused) as info:
        vault.registry.promote(ref, "prod")
    psi = next(g for g in info.value.decision.gates if g.name == "max_psi")
    assert not psi.passed
    assert psi.measured > 0.2
    assert info.value.message == (
        f"{ref} was not promoted to prod: unmet gates: rollback_plan (no previous version), "
        f"drift (max PSI {psi.measured:.3g} > 0.2)"
    )
    refusal = vault.registry.audit.events(action="refuse")[-1]
    assert next(g for g in refusal.details["gates"] if g["name"] == "max_psi")["passed"] is False
    assert vault.registry.aliases("fraud/detector") == {}
    # against the data it was trained on, the same gate passes and the alias moves
    write_policy(
        project, "models:\n  fraud/detector:\n    prod:\n      drift: {reference: 'data:tx@v2', max_psi: 0.2}\n"
    )
    assert vault.registry.promote(ref, "prod").moved
    assert vault.registry.aliases("fraud/detector") == {"prod": "0.1.0"}


def test_unset_of_an_alias_that_is_not_set_is_a_noop(any_vault: Vault, project: Path) -> None:
    ref = register(any_vault, project, 0.9)
    any_vault.registry.promote(ref, "staging")
    assert any_vault.registry.unset_alias("fraud/detector", "staging").moved
    events = len(any_vault.registry.audit.events())
    for alias in ("staging", "never-set"):
        decision = any_vault.registry.unset_alias("fraud/detector", alias)
        assert (decision.action, decision.moved, decision.audit_seq) == ("noop", False, None)
    assert len(any_vault.registry.audit.events()) == events
    assert [m.action for m in any_vault.registry.history("fraud/detector", "staging")] == ["promote", "unset"]


def test_a_version_resolved_by_alias_lists_its_aliases(any_vault: Vault, project: Path) -> None:
    ref = register(any_vault, project, 0.9)
    any_vault.registry.promote(ref, "prod")
    any_vault.registry.promote(ref, "staging")
    assert any_vault.registry.resolve("fraud/detector@prod").aliases == ("prod", "staging")
    assert any_vault.registry.resolve(ref).aliases == ("prod", "staging")


def test_reregistering_the_same_tree_returns_the_highest_live_version(any_vault: Vault, project: Path) -> None:
    model = make_model(project)
    first, _ = any_vault.registry.register("fraud/detector", model)
    any_vault.registry.promote(first.ref, "prod")
    again, created = any_vault.registry.register("fraud/detector", model)
    assert (again.version, created, again.aliases) == (first.version, False, ("prod",))
    assert [e.action for e in any_vault.registry.audit.events()] == ["register", "promote"]
    # an explicit --bump or --version still makes a new version of the same content
    assert any_vault.registry.register("fraud/detector", model, bump="patch")[0].version == "0.1.1"
    assert any_vault.registry.register("fraud/detector", model)[0].version == "0.1.1"
    # the highest live version is what counts: once it is archived, the content gets a new number
    any_vault.registry.archive("fraud/detector@0.1.1")  # prod is on 0.1.0
    assert any_vault.registry.register("fraud/detector", model)[1] is False  # same as 0.1.0, now the highest live
    (model / "model.bin").write_bytes(b"other")
    assert any_vault.registry.register("fraud/detector", model)[0].version == "0.1.2"


def test_the_same_files_from_another_run_are_a_new_version(vault: Vault, project: Path) -> None:
    model = make_model(project)
    refs = []
    for _ in range(2):
        run = vault.runs.create(name="train", capture=False, background_git=False)
        vault.runs.log_artifact(run.id, model, name="model")
        vault.runs.finish(run.id)
        refs.append(run.ref)
    first, _ = vault.registry.register("fraud/detector", run=refs[0])
    assert vault.registry.register("fraud/detector", run=refs[0]) == (first, False)
    second, created = vault.registry.register("fraud/detector", run=refs[1])
    assert (second.version, created) == ("0.1.1", True)


SRC = Path(aliases_module.__file__).parents[2]
# Left to the changes under way in these modules (the run wrapper's parser, the git capture retry).
NOT_YET: set[str] = set()


def test_no_assert_guards_a_runtime_invariant() -> None:
    """``assert`` vanishes under ``python -O``: invariants raise errors instead."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel not in NOT_YET:
            tree = ast.parse(path.read_text(), filename=str(path))
            found += [f"{rel}:{node.lineno}" for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert found == []


def test_unmet_gates_read_as_one_line_of_reasons() -> None:
    from labvault.entities import GateResult
    from labvault.services.registry.gates import unmet_gates

    gates = [
        GateResult("from", "staging", False, measured=None, threshold="0.1.0"),
        GateResult("approvals", "approvals", False, measured=1, threshold=2),
        GateResult("rollback_plan", "rollback_plan", False),
        GateResult("metric", "auc", False, measured=0.85, threshold=">= 0.9"),
        GateResult("metric", "latency_ms", True, measured=20, threshold="< 50"),
        GateResult("metric", "recall", False, threshold="> 0.5", detail="metric recall is not recorded"),
        GateResult("metric", "f1", False, measured="NaN", threshold="> 0.5"),
        GateResult("drift", "max_psi", False, measured=0.312345, threshold="<= 0.2"),
        GateResult("drift", "max_record_change", False, measured=0.25, threshold="<= 0.1"),
        GateResult("drift", "schema", False, measured="changed", threshold="unchanged"),
        GateResult("drift", "drift", False, detail="the version records no input data"),
        GateResult("check", "validation", False, measured=3, threshold=0, detail="exit 3 (0.2s)"),
    ]
    assert unmet_gates(gates) == (
        "from (staging points at nothing), approvals (1 of 2), rollback_plan (no previous version), "
        "metric auc (0.85 < 0.9), metric recall (not recorded), metric f1 (NaN), drift (max PSI 0.312 > 0.2), "
        "drift (record change 0.25 > 0.1), drift (schema changed), drift (the version records no input data), "
        "check validation (exit 3)"
    )
