"""The registry through the installed ``labvault`` executable: real exit codes, JSON, no tracebacks."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Cli
from tests.e2e.teamvault import TEAM, TEAM_FULL, team_or_local_cli


@pytest.fixture
def cli(request: pytest.FixtureRequest, cli: Cli) -> Cli:
    """The local vault, or (for the tests marked TEAM) also a team vault on PostgreSQL + S3."""
    return team_or_local_cli(request, cli)


def model_folder(project: Path, name: str = "model", *, weights: str = "w1", auc: float = 0.95) -> Path:
    folder = project / name
    folder.mkdir(exist_ok=True)
    (folder / "model.bin").write_text(weights)
    (folder / "metrics.json").write_text(json.dumps({"auc": auc}))
    return folder


@pytest.fixture
def vault_cli(cli: Cli) -> Cli:
    cli("init", "-q")
    return cli


@TEAM
def test_register_get_and_sha256sum(vault_cli: Cli, project: Path) -> None:
    model_folder(project)
    out = vault_cli("models", "register", "fraud/detector", "model", "-m", "first", "--json")
    doc = json.loads(out.stdout)
    assert doc["ref"] == "fraud/detector@0.1.0"
    assert doc["created"] is True
    assert doc["id"] == doc["ref"]
    assert "metrics.json is the one from the model folder" in doc["notes"][0]
    vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod")
    got = vault_cli("get", "fraud/detector@prod", "-o", "out")
    target = project / "out" / "fraud" / "detector" / "0.1.0"
    assert (project / got.stdout.strip()).resolve() == target.resolve()
    check = subprocess.run(["sha256sum", "-c", "checksum.txt"], cwd=target, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout
    vault_cli("get", "fraud/detector@0.1.0", "-o", "flat", "--flat")
    assert (project / "flat" / "model.bin").read_text() == "w1"
    again = vault_cli("models", "register", "fraud/detector", "model", "--version", "0.1.0")
    assert "nothing to do" in again.stdout


@TEAM_FULL
def test_listings_are_json_arrays(vault_cli: Cli, project: Path) -> None:
    model_folder(project)
    vault_cli("models", "register", "fraud/detector", "model")
    vault_cli("models", "register", "fraud/detector", "model", "--bump", "minor")
    models = json.loads(vault_cli("models", "list", "--json").stdout)
    assert [m["ref"] for m in models] == ["fraud/detector"]
    assert models[0]["latest"] == "0.2.0"
    versions = json.loads(vault_cli("models", "versions", "fraud/detector", "--json").stdout)
    assert [v["version"] for v in versions] == ["0.1.0", "0.2.0"]
    shown = json.loads(vault_cli("models", "show", "fraud/detector@0.2.0", "--json").stdout)
    assert shown["metrics"] == {"auc": 0.95}
    assert {f["path"] for f in shown["file_list"]} >= {"model.bin", "checksum.txt"}
    assert shown["created_at"].endswith("Z")
    human = vault_cli("models", "show", "fraud/detector")
    assert "0.2.0" in human.stdout


BAD_INPUT = [
    (("models", "show", "fraud/nothing@1.0.0"), 3, "no model fraud/nothing"),
    (("models", "show", "fraud/detector@9.9.9"), 3, "no version 9.9.9"),
    (("get", "fraud/detector@prod", "-o", "x"), 3, "no alias 'prod'"),
    (("models", "rollback", "fraud/detector", "prod"), 3, "no alias"),
    (("models", "history", "fraud/detector", "prod"), 3, "no alias"),
    (("models", "alias", "unset", "fraud/nothing", "prod"), 3, "no model fraud/nothing"),
    (("models", "register", "fraud/detector", "model", "--version", "1.0"), 2, "invalid version"),
    (("models", "show", "fraud/detector@1.0"), 2, "invalid version"),
    (("models", "register", "fraud/detector", "model", "--bump", "large"), 2, "invalid --bump"),
    (("models", "register", "fraud/detector", "empty"), 2, "holds no files"),
    (("models", "register", "fraud/detector", "missing"), 3, "does not exist"),
    (("models", "register", "fraud/../etc", "model"), 2, "invalid"),
    (("models", "promote", "fraud/detector@0.1.0", "--to", "a/b"), 2, ""),
]


def test_bad_input_exit_codes(vault_cli: Cli, project: Path) -> None:
    model_folder(project)
    (project / "empty").mkdir()
    vault_cli("models", "register", "fraud/detector", "model")
    for args, code, message in BAD_INPUT:
        proc = vault_cli(*args, expect=code)
        assert proc.stderr.startswith("error: "), args
        assert message in proc.stderr, args
        assert "hint: " in proc.stderr or code == 2, args
    assert [e["action"] for e in json.loads(vault_cli("audit", "log", "--json").stdout)] == ["register"]


def test_different_content_under_an_existing_version_is_exit_4(vault_cli: Cli, project: Path) -> None:
    folder = model_folder(project)
    vault_cli("models", "register", "fraud/detector", "model", "--version", "1.0.0")
    (folder / "model.bin").write_text("other")
    proc = vault_cli("models", "register", "fraud/detector", "model", "--version", "1.0.0", expect=4)
    assert "already exists with different content" in proc.stderr


def test_alias_to_an_archived_version_is_refused(vault_cli: Cli, project: Path) -> None:
    model_folder(project)
    vault_cli("models", "register", "fraud/detector", "model")
    vault_cli("models", "archive", "fraud/detector@0.1.0", "-m", "bad")
    proc = vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod", expect=2)
    assert "archived" in proc.stderr
    assert json.loads(vault_cli("models", "versions", "fraud/detector", "--json").stdout) == []


def test_policy_errors_name_line_and_key(vault_cli: Cli, project: Path) -> None:
    model_folder(project)
    vault_cli("models", "register", "fraud/detector", "model")
    (project / "labvault.yaml").write_text("models:\n  fraud/detector:\n    prod:\n      metrics: {auc: '>= 0.9'\n")
    proc = vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod", expect=2)
    assert "labvault.yaml:" in proc.stderr
    assert "YAML syntax error" in proc.stderr
    (project / "labvault.yaml").write_text("models:\n  fraud/detector:\n    prod:\n      approvals: -1\n")
    proc = vault_cli("models", "check", "fraud/detector@0.1.0", "--for", "prod", expect=2)
    assert "labvault.yaml:4: models.fraud/detector.prod.approvals" in proc.stderr


@TEAM_FULL
def test_promotion_gates_refusal_check_and_history(vault_cli: Cli, project: Path) -> None:
    model_folder(project, auc=0.85)
    vault_cli("models", "register", "fraud/detector", "model")
    model_folder(project, "better", weights="w2", auc=0.93)
    vault_cli("models", "register", "fraud/detector", "better")
    (project / "labvault.yaml").write_text(
        "models:\n  fraud/detector:\n    staging:\n      metrics:\n        auc: '>= 0.90'\n"
        "      checks:\n        - name: exists\n          run: no-such-check-binary {model_dir}\n"
        "        - name: hangs\n"
        f"          run: {sys.executable} -c 'import time; time.sleep(20)'\n          timeout: 0.3\n"
    )
    refused = vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "staging", expect=1)
    assert "metric auc" in refused.stderr
    assert "check exists" in refused.stderr
    assert "check hangs" in refused.stderr
    human = vault_cli("models", "check", "fraud/detector@0.1.1", "--for", "staging", expect=1)
    assert "2 of 3 gates unmet for fraud/detector@0.1.1 -> staging: check exists (command not found" in human.stderr
    checked = vault_cli("models", "check", "fraud/detector@0.1.1", "--for", "staging", "--json", expect=1)
    gates = {g["name"]: g for g in json.loads(checked.stdout)["gates"]}
    assert gates["auc"]["passed"] is True
    assert "command not found" in gates["exists"]["detail"]
    assert "timed out" in gates["hangs"]["detail"]
    (project / "labvault.yaml").write_text(
        "models:\n  fraud/detector:\n    staging:\n      metrics: {auc: '>= 0.90'}\n"
    )
    vault_cli("models", "check", "fraud/detector@0.1.1", "--for", "staging")
    moved = json.loads(vault_cli("models", "promote", "fraud/detector@0.1.1", "--to", "staging", "--json").stdout)
    assert moved["moved"] is True
    assert moved["policy_hash"].startswith("sha256:")
    vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod")
    vault_cli("models", "promote", "fraud/detector@staging", "--to", "prod", "-m", "ship it")
    back = json.loads(vault_cli("models", "rollback", "fraud/detector", "prod", "-m", "oops", "--json").stdout)
    assert (back["before"], back["after"]) == ("0.1.1", "0.1.0")
    moves = json.loads(vault_cli("models", "history", "fraud/detector", "--json").stdout)
    assert [(m["alias"], m["action"], m["after"]) for m in moves] == [
        ("staging", "promote", "0.1.1"),
        ("prod", "promote", "0.1.0"),
        ("prod", "promote", "0.1.1"),
        ("prod", "rollback", "0.1.0"),
    ]
    assert moves[0]["gates"][0]["measured"] == 0.93
    vault_cli("models", "alias", "unset", "fraud/detector", "staging")
    vault_cli("get", "fraud/detector@staging", "-o", "x", expect=3)


def test_approvals_count_distinct_users(vault_cli: Cli, project: Path) -> None:
    model_folder(project)
    vault_cli("models", "register", "fraud/detector", "model")
    (project / "labvault.yaml").write_text("models:\n  fraud/detector:\n    prod:\n      approvals: 2\n")
    alice = {"LABVAULT_USER": "alice@example.com"}
    vault_cli("models", "approve", "fraud/detector@0.1.0", "--for", "prod", env=alice)
    again = vault_cli("models", "approve", "fraud/detector@0.1.0", "--for", "prod", env=alice)
    assert "already approved" in again.stdout
    vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod", expect=1)
    vault_cli("models", "approve", "fraud/detector@0.1.0", "--for", "prod", env={"LABVAULT_USER": "bob@example.com"})
    vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod")


def test_audit_log_and_verify(vault_cli: Cli, project: Path) -> None:
    model_folder(project)
    vault_cli("models", "register", "fraud/detector", "model")
    vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod")
    log = json.loads(vault_cli("audit", "log", "--json").stdout)
    assert [e["action"] for e in log] == ["register", "promote"]
    assert log[1]["prev_hash"] == log[0]["hash"]
    assert log[0]["actor"] == "tester@example.com"
    ok = vault_cli("audit", "verify")
    assert "intact" in ok.stdout
    db = sqlite3.connect(project / ".labvault" / "meta.db")
    db.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1")
    db.commit()
    db.close()
    bad = vault_cli("audit", "verify", expect=1)
    assert "event #1" in bad.stderr
    report = json.loads(vault_cli("audit", "verify", "--json", expect=1).stdout)
    assert report["first_bad"] == 1


def test_python_api_models_get(vault_cli: Cli, project: Path) -> None:
    model_folder(project)
    vault_cli("models", "register", "fraud/detector", "model")
    vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod")
    code = "import labvault as lv; p = lv.models.get('fraud/detector@prod'); print((p / 'model.bin').read_text())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "w1"


def test_alias_set_unset_show_and_refusal_line(vault_cli: Cli, project: Path) -> None:
    """`alias set` moves under the promote policy; `show @alias` lists its aliases; unset twice is exit 0."""
    model_folder(project, auc=0.85)
    vault_cli("models", "register", "fraud/detector", "model")
    (project / "labvault.yaml").write_text(
        "models:\n  fraud/detector:\n    prod:\n      rollback_plan: required\n      metrics: {auc: '>= 0.9'}\n"
    )
    refused = vault_cli("models", "alias", "set", "fraud/detector@0.1.0", "prod", expect=1)
    assert refused.stderr.splitlines()[0] == (
        "error: fraud/detector@0.1.0 was not promoted to prod: "
        "unmet gates: rollback_plan (no previous version), metric auc (0.85 < 0.9)"
    )
    (project / "labvault.yaml").unlink()
    moved = json.loads(vault_cli("models", "alias", "set", "fraud/detector@0.1.0", "prod", "-m", "go", "--json").stdout)
    assert (moved["action"], moved["after"]) == ("promote", "0.1.0")
    vault_cli("models", "alias", "set", "fraud/detector@prod", "staging")
    shown = json.loads(vault_cli("models", "show", "fraud/detector@prod", "--json").stdout)
    assert shown["aliases"] == ["prod", "staging"]
    assert "prod, staging" in vault_cli("models", "show", "fraud/detector@prod").stdout
    vault_cli("models", "alias", "unset", "fraud/detector", "staging")
    events = len(json.loads(vault_cli("audit", "log", "--json").stdout))
    again = vault_cli("models", "alias", "unset", "fraud/detector", "staging")
    assert "already unset" in again.stdout
    assert len(json.loads(vault_cli("audit", "log", "--json").stdout)) == events
    history = json.loads(vault_cli("models", "history", "fraud/detector", "--json").stdout)
    assert [(m["alias"], m["action"], m["reason"]) for m in history] == [
        ("prod", "promote", "go"),
        ("staging", "promote", None),
        ("staging", "unset", None),
    ]


def test_registering_an_unchanged_model_again_prints_its_version(vault_cli: Cli, project: Path) -> None:
    model_folder(project)
    vault_cli("models", "register", "fraud/detector", "model")
    again = json.loads(vault_cli("models", "register", "fraud/detector", "model", "--json").stdout)
    assert (again["ref"], again["created"]) == ("fraud/detector@0.1.0", False)
    assert "fraud/detector@0.1.0" in vault_cli("models", "register", "fraud/detector", "model").stdout
    bumped = json.loads(vault_cli("models", "register", "fraud/detector", "model", "--bump", "patch", "--json").stdout)
    assert (bumped["ref"], bumped["created"]) == ("fraud/detector@0.1.1", True)
    assert [e["action"] for e in json.loads(vault_cli("audit", "log", "--json").stdout)] == ["register", "register"]


def test_audit_verify_against_a_head_kept_elsewhere(vault_cli: Cli, project: Path) -> None:
    """A wiped log and head file verify as an empty log; the head saved in CI does not."""
    model_folder(project)
    vault_cli("models", "register", "fraud/detector", "model")
    vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod")
    (project / "ci-head.json").write_text(vault_cli("audit", "verify", "--json").stdout)
    line = (project / ".labvault" / "audit-head").read_text().strip()
    ok = vault_cli("audit", "verify", "--against", "ci-head.json")
    assert "events #1..#2 match the anchored head" in ok.stderr
    vault_cli("audit", "verify", "--against", line)
    db = sqlite3.connect(project / ".labvault" / "meta.db")
    db.execute("DELETE FROM audit_events")
    db.execute(f"UPDATE vault_meta SET value = '0:{'0' * 64}' WHERE key = 'audit_head'")
    db.commit()
    db.close()
    (project / ".labvault" / "audit-head").unlink()
    vault_cli("audit", "verify")
    bad = vault_cli("audit", "verify", "--against", "ci-head.json", expect=1)
    assert "anchored head records event #2, the log ends at #0" in bad.stderr
    malformed = vault_cli("audit", "verify", "--against", "sha256:abc", expect=2)
    assert malformed.stderr.startswith("error: 'sha256:abc' is not an audit head")


def test_the_drift_gate_refuses_a_promotion(vault_cli: Cli, project: Path) -> None:
    """A model trained on drifted data: promote refuses naming the PSI, and moves against its own data."""
    rng = random.Random(1)
    for mean in (100, 130):
        rows = "".join(f"{rng.gauss(mean, 10):.2f},{rng.randint(0, 1)}\n" for _ in range(300))
        (project / "tx.csv").write_text("amount,label\n" + rows)
        vault_cli("data", "add", "tx", "tx.csv")
    model_folder(project)
    vault_cli("run", "--input", "data:tx@v2", "--output", "model", "--", "true")
    run = json.loads(vault_cli("runs", "list", "--json").stdout)[0]["ref"]
    vault_cli("models", "register", "fraud/detector", "--from", run, "--artifact", "model")
    policy = "models:\n  fraud/detector:\n    prod:\n      rollback_plan: required\n"
    (project / "labvault.yaml").write_text(policy + "      drift: {reference: 'data:tx@v1', max_psi: 0.2}\n")
    refused = vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod", expect=1)
    first = refused.stderr.splitlines()[0]
    assert first.startswith(
        "error: fraud/detector@0.1.0 was not promoted to prod: "
        "unmet gates: rollback_plan (no previous version), drift (max PSI "
    ), first
    assert first.endswith(" > 0.2)"), first
    (project / "labvault.yaml").write_text(policy + "      drift: {reference: 'data:tx@v2', max_psi: 0.2}\n")
    moved = vault_cli("models", "promote", "fraud/detector@0.1.0", "--to", "prod", "--waive-rollback-plan", "first")
    assert "prod: unset -> 0.1.0" in moved.stdout
