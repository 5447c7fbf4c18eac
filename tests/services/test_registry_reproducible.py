"""The ``reproducible`` promotion gate, on reproductions recorded as ``labvault reproduce`` records
them (a rerun tagged ``reproduces`` carrying ``reproduce.json``); the real reruns are in
tests/e2e/test_models_reproducible.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labvault import Vault
from labvault.errors import ValidationError
from labvault.services.registry import PromotionRefused


def _policy(project: Path, body: str) -> None:
    (project / "labvault.yaml").write_text(f"models:\n  shop/ranker:\n    prod:\n      reproducible: {body}\n")


def _version(vault: Vault, project: Path, *, nested: bool = False) -> tuple[str, str]:
    run = vault.runs.create(name="train", capture=False, background_git=False)
    source = run.id
    if nested:
        source = vault.runs.create(name="fold", parent_id=run.id, capture=False, background_git=False).id
    vault.runs.log_metrics(source, [("auc", 0.9, 0)])
    (project / "w.bin").write_text(source)
    vault.runs.log_artifact(source, project / "w.bin", name="model")
    vault.runs.finish(source)
    if nested:
        vault.runs.finish(run.id)
    version, _ = vault.registry.register("shop/ranker", run=f"run:{source}", artifact="model", bump="minor")
    return version.ref, run.id if nested else source


def _reproduction(
    vault: Vault, tagged: str, *, original: str | None = None, verdict: str = "reproduced", env: str = "current",
    rerun_auc: float = 0.9, report: bool = True,
) -> str:  # fmt: skip
    rerun = vault.runs.create(name="train", tags={"reproduces": f"run:{tagged}"}, capture=False, background_git=False)
    doc = {
        "original": f"run:{original or tagged}",
        "verdict": verdict,
        "environment": {"mode": env},
        "metrics": [{"metric": "auc", "verdict": "EXACT", "recorded": 0.9, "rerun": rerun_auc}],
    }
    if report:
        vault.runs.log_bytes(rerun.id, json.dumps(doc).encode(), name="reproduce.json")
    vault.runs.set_tags(rerun.id, {"reproduce_verdict": verdict})
    vault.runs.finish(rerun.id)
    return rerun.id


def _gate(vault: Vault, ref: str) -> tuple[bool, str]:
    (gate,) = [g for g in vault.registry.check(ref, "prod").gates if g.gate == "reproducible"]
    return gate.passed, gate.detail


def test_never_reproduced_is_refused_with_the_command_then_passes(any_vault: Vault, project: Path) -> None:
    _policy(project, "required")
    ref, run_id = _version(any_vault, project)
    with pytest.raises(PromotionRefused) as refused:
        any_vault.registry.promote(ref, "prod")
    assert refused.value.exit_code == 1
    assert f"reproducible (run:{run_id} was never reproduced: run `labvault reproduce run:{run_id}`)" in str(
        refused.value
    )
    # A tag alone (no report), or a report about another run, is no reproduction.
    _reproduction(any_vault, run_id, report=False)
    _reproduction(any_vault, run_id, original="0123456789ab")
    assert not _gate(any_vault, ref)[0]
    _reproduction(any_vault, run_id)
    decision = any_vault.registry.promote(ref, "prod")
    assert decision.moved
    (gate,) = [g for g in decision.gates if g.gate == "reproducible"]
    assert gate.passed
    assert gate.detail.startswith("reproduced by run:")


def test_a_failing_reproduction_is_refused_and_says_so(any_vault: Vault, project: Path) -> None:
    _policy(project, "required")
    ref, run_id = _version(any_vault, project)
    rerun = _reproduction(any_vault, run_id, verdict="not reproduced")
    passed, detail = _gate(any_vault, ref)
    assert not passed
    assert detail.startswith(f"not reproduced: run:{rerun} says not reproduced")
    assert f"`labvault reproduce run:{run_id}`" in detail


def test_env_rebuild_needs_a_rebuilt_environment(any_vault: Vault, project: Path) -> None:
    _policy(project, "{env: rebuild}")
    ref, run_id = _version(any_vault, project)
    _reproduction(any_vault, run_id, env="current")
    passed, detail = _gate(any_vault, ref)
    assert not passed
    assert "no passing reproduction in a rebuilt environment" in detail
    assert f"`labvault reproduce run:{run_id} --env rebuild`" in detail
    _reproduction(any_vault, run_id, env="rebuild")
    assert _gate(any_vault, ref)[0]


def test_tolerances_are_the_policys_not_the_reproductions(any_vault: Vault, project: Path) -> None:
    _policy(project, "{rtol: 1.0e-9}")
    ref, run_id = _version(any_vault, project)
    _reproduction(any_vault, run_id, rerun_auc=0.9001)  # judged "reproduced" with a looser --rtol
    passed, detail = _gate(any_vault, ref)
    assert not passed
    assert "metrics beyond the policy's tolerances: auc" in detail
    assert "--rtol 1e-09" in detail
    _policy(project, "{rtol: 0.001}")
    assert _gate(any_vault, ref)[0]
    _policy(project, "{atol: 0.00001}")
    assert not _gate(any_vault, ref)[0]


def test_a_nested_run_is_reproduced_through_its_top_run(vault: Vault, project: Path) -> None:
    _policy(project, "required")
    ref, top = _version(vault, project, nested=True)
    source = vault.registry.resolve(ref).run_id
    assert source is not None
    assert not _gate(vault, ref)[0]
    _reproduction(vault, top, original=source)  # the rerun of the top process, judged on the nested run
    assert _gate(vault, ref)[0]


def test_a_version_without_a_source_run_fails_the_gate(vault: Vault, project: Path) -> None:
    _policy(project, "required")
    (project / "m").mkdir()
    (project / "m" / "w.bin").write_text("w")
    version, _ = vault.registry.register("shop/ranker", project / "m")
    passed, detail = _gate(vault, version.ref)
    assert not passed
    assert "no source run" in detail


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("yes", "reproducible: write `required`"),
        ("{env: docker}", "reproducible.env: Input should be 'any' or 'rebuild'"),
        ("{rtol: -1}", "reproducible.rtol: Input should be greater than or equal to 0"),
        ("{envv: rebuild}", "reproducible.envv: unknown key (allowed: atol, env, rtol)"),
    ],
)
def test_bad_policies_name_the_line_and_key(vault: Vault, project: Path, body: str, says: str) -> None:
    _policy(project, body)
    ref, _ = _version(vault, project)
    with pytest.raises(ValidationError) as bad:
        vault.registry.check(ref, "prod")
    assert f"labvault.yaml:4: models.shop/ranker.prod.{says}" in bad.value.message
