"""Alias moves: rollback, unset, history, and promotions that lose a race."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from labvault.errors import Conflict, NotFound, ValidationError
from labvault.vault import Vault
from tests.services.test_registry_policy import register, write_policy


# -- rollback, unset, history -------------------------------------------------------------------
def test_rollback_walks_back_the_history(any_vault: Vault, project: Path) -> None:
    refs = [register(any_vault, project, a) for a in (0.91, 0.92, 0.93)]
    for ref in refs:
        any_vault.registry.promote(ref, "prod")
    assert any_vault.registry.rollback("fraud/detector", "prod", reason="latency").after == "0.1.1"
    assert any_vault.registry.rollback("fraud/detector", "prod").after == "0.1.0"
    with pytest.raises(NotFound, match="no earlier version"):
        any_vault.registry.rollback("fraud/detector", "prod")
    assert any_vault.registry.resolve("fraud/detector@prod").version == "0.1.0"
    moves = any_vault.registry.history("fraud/detector", "prod")
    assert [(m.action, m.before, m.after) for m in moves] == [
        ("promote", None, "0.1.0"),
        ("promote", "0.1.0", "0.1.1"),
        ("promote", "0.1.1", "0.1.2"),
        ("rollback", "0.1.2", "0.1.1"),
        ("rollback", "0.1.1", "0.1.0"),
    ]
    assert moves[3].reason == "latency"


def test_rollback_skips_gates(vault: Vault, project: Path) -> None:
    a = register(vault, project, 0.95)
    b = register(vault, project, 0.96)
    vault.registry.promote(a, "prod")
    vault.registry.promote(b, "prod")
    write_policy(project, "models:\n  fraud/detector:\n    prod:\n      metrics: {auc: '>= 0.99'}\n")
    assert vault.registry.rollback("fraud/detector", "prod").after == "0.1.0"


def test_unset_and_unknown_aliases(any_vault: Vault, project: Path) -> None:
    ref = register(any_vault, project, 0.9)
    any_vault.registry.promote(ref, "staging")
    any_vault.registry.unset_alias("fraud/detector", "staging")
    with pytest.raises(NotFound):
        any_vault.registry.resolve("fraud/detector@staging")
    assert any_vault.registry.unset_alias("fraud/detector", "staging").action == "noop"
    with pytest.raises(NotFound):
        any_vault.registry.unset_alias("fraud/nothing", "staging")
    with pytest.raises(NotFound):
        any_vault.registry.rollback("fraud/detector", "prod")
    with pytest.raises(NotFound):
        any_vault.registry.history("fraud/detector", "prod")
    with pytest.raises(NotFound):
        any_vault.registry.history("fraud/nothing")
    with pytest.raises(ValidationError):
        any_vault.registry.promote(ref, "bad/alias")
    any_vault.registry.promote(ref, "staging")
    actions = [m.action for m in any_vault.registry.history("fraud/detector", "staging")]
    assert actions == ["promote", "unset", "promote"]


def test_lost_race_is_refused_and_audited(any_vault: Vault, project: Path) -> None:
    """A promotion whose alias moved while its gates ran loses (exit 4); both attempts are audited."""
    a = register(any_vault, project, 0.91)
    b = register(any_vault, project, 0.92)
    (project / "slow.py").write_text(
        "import sys, time, pathlib\n"
        "if sys.argv[1] == '0.1.0':\n"
        "    pathlib.Path('started').write_text('')\n"
        "    while not pathlib.Path('go').exists(): time.sleep(0.01)\n"
    )
    write_policy(
        project,
        "models:\n  fraud/detector:\n    prod:\n"
        f"      checks: [{{name: slow, run: '{sys.executable} slow.py {{version}}'}}]\n",
    )
    results: dict[str, object] = {}

    def slow() -> None:
        try:
            results["slow"] = any_vault.registry.promote(a, "prod")
        except Conflict as exc:
            results["slow"] = exc

    thread = threading.Thread(target=slow)
    thread.start()
    other = Vault.open(project)
    try:
        deadline = time.monotonic() + 20
        while not (project / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        results["fast"] = other.registry.promote(b, "prod")
    finally:
        (project / "go").write_text("")
        thread.join(30)
        other.close()
    assert isinstance(results["slow"], Conflict)
    assert any_vault.registry.resolve("fraud/detector@prod").version == "0.1.1"
    refusal = any_vault.registry.audit.events(action="refuse")[-1]
    assert "lost race" in json.dumps(refusal.details)
    assert [m.after for m in any_vault.registry.history("fraud/detector", "prod")] == ["0.1.1"]
    assert any_vault.registry.verify_audit().ok


def test_rollback_works_with_a_broken_policy_file_and_records_its_hash(vault: Vault, project: Path) -> None:
    import hashlib

    a = register(vault, project, 0.95)
    b = register(vault, project, 0.96)
    vault.registry.promote(a, "prod")
    vault.registry.promote(b, "prod")
    write_policy(project, "models: [broken\n")
    with pytest.raises(ValidationError):
        vault.registry.promote(a, "staging")
    decision = vault.registry.rollback("fraud/detector", "prod", reason="incident 42")
    expected = hashlib.sha256((project / "labvault.yaml").read_bytes()).hexdigest()
    assert decision.policy_hash == expected
    event = vault.registry.audit.events(action="rollback")[-1]
    assert event.policy_hash == expected
    assert event.details["reason"] == "incident 42"
