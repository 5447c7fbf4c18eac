"""Policies from labvault.yaml: parsing with line numbers, gates, promotion, rollback, history."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from labvault.errors import NotFound, ValidationError
from labvault.services.registry import PromotionRefused
from labvault.vault import Vault
from tests.services.test_registry import make_model


def write_policy(project: Path, text: str) -> None:
    (project / "labvault.yaml").write_text(textwrap.dedent(text))


def register(vault: Vault, project: Path, auc: float, *, latency: float = 20) -> str:
    model = make_model(project, f"m{auc}", weights=str(auc).encode(), metrics={"auc": auc, "latency_ms": latency})
    return vault.registry.register("fraud/detector", model)[0].ref


# -- parsing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:\n  fraud/detector:\n    prod:\n      metrics: [\n", "labvault.yaml:5: YAML syntax error"),
        (
            "models:\n  fraud/detector:\n    prod:\n      aprovals: 1\n",
            "labvault.yaml:4: models.fraud/detector.prod.aprovals: unknown key",
        ),
        (
            "models:\n  fraud/detector:\n    prod:\n      approvals: many\n",
            "labvault.yaml:4: models.fraud/detector.prod.approvals: Input should be a valid integer",
        ),
        (
            "models:\n  fraud/detector:\n    prod:\n      metrics:\n        auc: 0.9\n",
            "labvault.yaml:5: models.fraud/detector.prod.metrics.auc",
        ),
        (
            "models:\n  fraud/detector:\n    prod:\n      metrics:\n        auc: '=> 0.9'\n",
            "labvault.yaml:5: models.fraud/detector.prod.metrics",
        ),
        (
            "models:\n  fraud/detector:\n    prod:\n      checks:\n        - name: x\n          command: ls\n",
            "labvault.yaml:6: models.fraud/detector.prod.checks[0].command: unknown key",
        ),
        (
            "models:\n  fraud/detector:\n    prod:\n      drift:\n        reference: transactions\n",
            "labvault.yaml:5: models.fraud/detector.prod.drift.reference",
        ),
        ("models:\n  fraud:\n    prod: {}\n", "labvault.yaml:2: models.fraud"),
        ("models:\n  a/b:\n    prod: {}\n    prod: {}\n", "labvault.yaml:4: models.a/b.prod: duplicate key"),
        ("models:\n  fraud/detector:\n    prod:\n      rollback_plan: maybe\n", "labvault.yaml:4"),
        ("- just\n- a list\n", "labvault.yaml:1"),
    ],
)
def test_policy_errors_name_file_line_and_key(vault: Vault, project: Path, text: str, expected: str) -> None:
    write_policy(project, text)
    with pytest.raises(ValidationError) as info:
        vault.registry.policy()
    assert expected in info.value.message


def test_policy_parses_and_other_sections_are_ignored(vault: Vault, project: Path) -> None:
    write_policy(
        project,
        """\
        stages:
          train: {cmd: python train.py}
        models:
          fraud/detector:
            staging:
              metrics: {auc: ">= 0.9"}
            prod:
              from: staging
              rollback_plan: required
              approvals: 2
        """,
    )
    policy = vault.registry.policy()
    assert policy.hash is not None
    assert len(policy.hash) == 64
    prod = policy.for_alias("fraud", "detector", "prod")
    assert prod is not None
    assert prod.from_ == "staging"
    assert prod.approvals == 2
    assert policy.for_alias("fraud", "detector", "dev") is None


# -- gates --------------------------------------------------------------------------------------
def test_metric_gates_refuse_listing_every_unmet_gate(any_vault: Vault, project: Path) -> None:
    write_policy(
        project,
        """\
        models:
          fraud/detector:
            staging:
              metrics: {auc: ">= 0.90", latency_ms: "< 50", recall: "> 0.5"}
        """,
    )
    ref = register(any_vault, project, 0.85, latency=70)
    with pytest.raises(PromotionRefused) as info:
        any_vault.registry.promote(ref, "staging")
    decision = info.value.decision
    failed = {g.name: g for g in decision.failed_gates}
    assert set(failed) == {"auc", "latency_ms", "recall"}
    assert failed["auc"].measured == 0.85
    assert failed["auc"].threshold == ">= 0.9"
    assert "not recorded" in failed["recall"].detail
    assert info.value.exit_code == 1
    refusal = any_vault.registry.audit.events(action="refuse")[-1]
    assert refusal.policy_hash == any_vault.registry.policy().hash
    assert {g["name"] for g in refusal.details["gates"]} == {"auc", "latency_ms", "recall"}
    with pytest.raises(NotFound):
        any_vault.registry.resolve("fraud/detector@staging")


def test_promotion_moves_when_gates_pass_and_check_moves_nothing(vault: Vault, project: Path) -> None:
    write_policy(project, "models:\n  fraud/detector:\n    staging:\n      metrics: {auc: '>= 0.90'}\n")
    ref = register(vault, project, 0.95)
    decision = vault.registry.check(ref, "staging")
    assert decision.passed
    assert not decision.moved
    with pytest.raises(NotFound):
        vault.registry.resolve("fraud/detector@staging")
    decision = vault.registry.promote(ref, "staging", reason="good auc")
    assert decision.moved
    assert decision.after == "0.1.0"
    assert vault.registry.resolve("fraud/detector@staging").version == "0.1.0"
    again = vault.registry.promote(ref, "staging")
    assert again.action == "noop"


def test_from_approvals_and_rollback_plan(any_vault: Vault, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_policy(
        project,
        """\
        models:
          fraud/detector:
            prod:
              from: staging
              rollback_plan: required
              approvals: 2
        """,
    )
    ref = register(any_vault, project, 0.95)
    refused = any_vault.registry.promote(ref, "prod", raise_on_refusal=False)
    assert {g.gate for g in refused.failed_gates} == {"from", "approvals", "rollback_plan"}
    any_vault.registry.promote(ref, "staging")
    assert any_vault.registry.approve(ref, "prod")
    assert not any_vault.registry.approve(ref, "prod")  # same user counts once
    decision = any_vault.registry.check(ref, "prod")
    approvals = next(g for g in decision.gates if g.gate == "approvals")
    assert (approvals.measured, approvals.passed) == (1, False)
    monkeypatch.setenv("LABVAULT_USER", "bob@example.com")
    other = Vault.open(project)
    assert other.registry.approve(ref, "prod")
    decision = other.registry.check(ref, "prod")
    assert [g.gate for g in decision.failed_gates] == ["rollback_plan"]
    decision = other.registry.promote(ref, "prod", waive_rollback_plan="first release")
    assert decision.moved
    plan = next(g for g in decision.gates if g.gate == "rollback_plan")
    assert plan.passed
    assert "waived: first release" in plan.detail
    other.close()


def test_checks_run_without_a_shell_and_failures_are_recorded(vault: Vault, project: Path) -> None:
    script = project / "check.py"
    script.write_text(
        "import sys, pathlib\n"
        "d = pathlib.Path(sys.argv[1])\n"
        "print('checked', sys.argv[2], sys.argv[3], sorted(p.name for p in d.iterdir()))\n"
        "sys.exit(0 if (d / 'model.bin').exists() else 3)\n"
    )
    py = sys.executable
    write_policy(
        project,
        f"""\
        models:
          fraud/detector:
            staging:
              checks:
                - name: validation
                  run: {py} check.py {{model_dir}} {{model}} {{version}}
                - name: missing
                  run: no-such-command-xyz --flag
                - name: hangs
                  run: {py} -c "import time; time.sleep(30)"
                  timeout: 0.5
                - name: shell
                  run: echo hi && exit 1
        """,
    )
    ref = register(vault, project, 0.9)
    decision = vault.registry.promote(ref, "staging", raise_on_refusal=False)
    gates = {g.name: g for g in decision.gates}
    assert gates["validation"].passed
    output = vault.objects.get_bytes(gates["validation"].output).decode()
    assert "checked fraud/detector 0.1.0" in output
    assert "model.bin" in output
    assert not gates["missing"].passed
    assert "command not found" in gates["missing"].detail
    assert not gates["hangs"].passed
    assert "timed out" in gates["hangs"].detail
    # no shell: "&&" and "exit" are plain arguments to echo, which succeeds
    assert gates["shell"].passed
    assert b"hi && exit 1" in vault.objects.get_bytes(gates["shell"].output)
    assert decision.action == "refuse"
    # the outputs are linked to the decision and kept by gc
    assert vault.maintenance.gc(grace=0, dry_run=True).deleted == ()
    event = vault.registry.audit.events(action="refuse")[-1]
    assert event.details["gates"][0]["output"] == str(gates["validation"].output)


def test_drift_gate_measures_psi_records_and_schema(vault: Vault, project: Path) -> None:
    import random

    rng = random.Random(1)
    data = project / "tx.csv"
    data.write_text("amount,label\n" + "".join(f"{rng.gauss(100, 10):.2f},{rng.randint(0, 1)}\n" for _ in range(400)))
    vault.data.add("tx", data)
    data.write_text("amount,label\n" + "".join(f"{rng.gauss(130, 10):.2f},{rng.randint(0, 1)}\n" for _ in range(500)))
    vault.data.add("tx", data)
    run = vault.runs.create(name="train", inputs=["data:tx@v2"], capture=False, background_git=False)
    vault.runs.log_metrics(run.id, [("auc", 0.95, 0)])
    vault.runs.log_artifact(run.id, make_model(project), name="model")
    vault.runs.finish(run.id)
    version, _ = vault.registry.register("fraud/detector", run=run.ref)
    write_policy(
        project,
        "models:\n  fraud/detector:\n    prod:\n"
        "      drift: {reference: 'data:tx@v1', max_psi: 0.2, max_record_change: 0.1}\n",
    )
    gates = {g.name: g for g in vault.registry.check(version.ref, "prod").gates}
    assert gates["schema"].passed
    assert not gates["max_psi"].passed
    assert gates["max_psi"].measured > 0.2
    assert not gates["max_record_change"].passed
    assert gates["max_record_change"].measured == 0.25
    write_policy(
        project, "models:\n  fraud/detector:\n    prod:\n      drift: {reference: 'data:tx@v2', max_psi: 0.2}\n"
    )
    assert vault.registry.check(version.ref, "prod").passed


def test_drift_gate_without_training_data_fails(vault: Vault, project: Path) -> None:
    write_policy(project, "models:\n  fraud/detector:\n    prod:\n      drift: {reference: 'data:tx@v1'}\n")
    ref = register(vault, project, 0.9)
    gate = vault.registry.check(ref, "prod").gates[0]
    assert not gate.passed
    assert "no input data" in gate.detail


def test_the_documented_example_policy_is_valid(vault: Vault, project: Path) -> None:
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "registry.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert example is not None
    (project / "labvault.yaml").write_text(example.group(1))
    policy = vault.registry.policy()
    prod = policy.for_alias("fraud", "detector", "prod")
    assert prod is not None
    assert prod.drift is not None
    assert prod.approvals == 2
    staging = policy.for_alias("fraud", "detector", "staging")
    assert staging is not None
    assert [c.name for c in staging.checks] == ["validation", "smoke"]


def test_placeholders_fill_words_after_splitting(tmp_path: Path) -> None:
    from labvault.services.registry.checks import expand_command

    argv = expand_command(
        "python 'my check.py' --dir={model_dir} {model}@{version}",
        model_dir=tmp_path / "a folder",
        model="fraud/detector",
        version="1.2.0",
    )
    assert argv == ["python", "my check.py", f"--dir={tmp_path / 'a folder'}", "fraud/detector@1.2.0"]


def test_an_alias_without_policy_passes_check_with_no_gates(vault: Vault, project: Path) -> None:
    ref = register(vault, project, 0.5)
    decision = vault.registry.check(ref, "dev")
    assert decision.passed
    assert decision.gates == ()


def test_lv_models_get_in_process(vault: Vault, project: Path) -> None:
    import labvault as lv

    ref = register(vault, project, 0.9)
    vault.registry.promote(ref, "prod")
    path = lv.models.get("fraud/detector@prod")
    assert (path / "checksum.txt").is_file()
    assert lv.models.resolve("fraud/detector@prod").version == "0.1.0"


def _alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return (
        "\n".join(lines)
        + f"\nmodels:\n  fraud/detector:\n    prod:\n      metrics: {{auc: '>= 0.9'}}\n      bomb: *a{levels}\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_alias_bomb(8), "labvault.yaml:5: aliases expand to more than 100000 extra nodes"),
        ("models: &m\n  fraud/detector: {prod: *m}\n", "labvault.yaml:1: an alias refers to a node that contains it"),
        ("models: " + "[" * 150 + "]" * 150 + "\n", "labvault.yaml:1: nested more than 100 deep"),
        ("models: !!python/name:os.system ''\n", "labvault.yaml:1: could not determine a constructor"),
    ],
)
def test_hostile_policy_files_are_refused_quickly(vault: Vault, project: Path, text: str, expected: str) -> None:
    # The 8-level bomb used to hang `models promote` for minutes (6 levels: 20 s and 437 MB).
    write_policy(project, text)
    started = time.monotonic()
    with pytest.raises(ValidationError) as info:
        vault.registry.policy()
    assert time.monotonic() - started < 2
    assert info.value.message.startswith(expected), info.value.message


def test_a_policy_file_over_10_mib_is_refused(vault: Vault, project: Path) -> None:
    write_policy(project, "models: {}\n" + "#" * (10 * 1024 * 1024) + "\n")
    with pytest.raises(ValidationError, match=r"^labvault.yaml is larger than 10 MiB"):
        vault.registry.policy()


def test_anchors_and_aliases_within_bounds_still_work(vault: Vault, project: Path) -> None:
    write_policy(
        project,
        """\
        models:
          fraud/detector:
            staging: &gate
              metrics: {auc: ">= 0.9"}
            prod: *gate
        """,
    )
    prod = vault.registry.policy().for_alias("fraud", "detector", "prod")
    assert prod is not None
    assert prod.metrics == {"auc": ">= 0.9"}


def test_a_non_finite_measured_metric_uses_the_one_json_encoding(any_vault: Vault, project: Path) -> None:
    write_policy(project, 'models:\n  fraud/detector:\n    staging:\n      metrics: {latency_ms: "< 50"}\n')
    ref = register(any_vault, project, 0.9, latency=float("inf"))
    with pytest.raises(PromotionRefused) as info:
        any_vault.registry.promote(ref, "staging")
    (gate,) = info.value.decision.failed_gates
    assert gate.measured == "Infinity"  # as json_safe writes it everywhere else, not Python's "inf"


@pytest.mark.parametrize("bad", ["[" * 100_000, '{"auc": ' * 200 + "1" + "}" * 200])
def test_hostile_json_in_a_model_folder_fails_the_gates_without_a_crash(vault: Vault, project: Path, bad: str) -> None:
    # A metrics.json or data_manifest.json nested 100,000 deep used to be a RecursionError (a traceback).
    model = make_model(project)
    (model / "metrics.json").write_text(bad)
    (model / "data_manifest.json").write_text(bad)
    ref = vault.registry.register("fraud/detector", model)[0].ref
    write_policy(
        project,
        """\
        models:
          fraud/detector:
            prod:
              metrics: {auc: ">= 0.9"}
              drift: {reference: "data:transactions@v1", max_psi: 0.2}
        """,
    )
    assert vault.registry.metrics(ref) is None
    with pytest.raises(PromotionRefused):
        vault.registry.promote(ref, "prod")
