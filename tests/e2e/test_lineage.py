"""``labvault lineage`` through the installed executable: both directions, formats, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Cli


@pytest.fixture
def trained(cli: Cli, project: Path) -> dict[str, str]:
    """data:tx@v1 -> a run -> shop/ranker@0.1.0, promoted to prod."""
    cli("init", "-q")
    (project / "tx").mkdir()
    (project / "tx" / "rows.csv").write_text("a,b\n1,2\n")
    cli("data", "add", "tx", "tx", "-q")
    cli("run", "--input", "data:tx@v1", "--", sys.executable, "-c", "print('trained')")
    run_id = json.loads(cli("runs", "list", "--json").stdout)[0]["id"]
    (project / "model").mkdir()
    (project / "model" / "w.bin").write_text("weights")
    cli("models", "register", "shop/ranker", "model", "--from", f"run:{run_id}", "-q")
    cli("models", "promote", "shop/ranker@0.1.0", "--to", "prod", "-q")
    return {"run": f"run:{run_id}", "version": "shop/ranker@0.1.0"}


def test_a_model_shows_its_run_and_snapshot_upstream(cli: Cli, trained: dict[str, str]) -> None:
    out = cli("lineage", "shop/ranker@prod").stdout
    lines = out.splitlines()
    assert lines[0] == "shop/ranker@0.1.0"
    assert "  -> alias: shop/ranker@prod" in lines  # the alias points at it: downstream, so ->
    assert any(line.strip().startswith(f"<- registered: {trained['run']}") for line in lines)
    assert any(line.strip() == "<- input: data:tx@v1" for line in lines)
    doc = json.loads(cli("lineage", "shop/ranker@0.1.0", "--json").stdout)
    assert doc["direction"] == "upstream"
    refs = {n["ref"] for n in doc["nodes"]}
    assert {trained["version"], trained["run"], "data:tx@v1"} <= refs
    assert {"from": "data:tx@v1", "to": trained["run"], "kind": "input"} in doc["edges"]
    assert all({"id", "ref"} <= set(n) for n in doc["nodes"])


def test_a_snapshot_shows_what_depends_on_it_downstream(cli: Cli, trained: dict[str, str]) -> None:
    doc = json.loads(cli("lineage", "data:tx@v1", "--json").stdout)
    assert doc["direction"] == "downstream"
    assert {"from": trained["version"], "to": "shop/ranker@prod", "kind": "alias"} in doc["edges"]
    text = cli("lineage", "data:tx@v1").stdout
    assert "-> alias: shop/ranker@prod" in text
    up = json.loads(cli("lineage", "data:tx@v1", "--upstream", "--json").stdout)
    assert [n["ref"] for n in up["nodes"]] == ["data:tx@v1"]
    one = cli("lineage", "data:tx@v1", "--depth", "1")
    assert "registered" not in one.stdout
    assert "--depth" in one.stderr


def test_mermaid_and_dot(cli: Cli, trained: dict[str, str]) -> None:
    mermaid = cli("lineage", trained["run"], "--mermaid").stdout
    assert mermaid.startswith("flowchart LR\n")
    assert "-->|input|" in mermaid
    dot = cli("lineage", trained["run"], "--dot").stdout
    assert dot.startswith("digraph lineage {")
    assert f'"data:tx@v1" -> "{trained["run"]}" [label="input"];' in dot


def test_an_object_ref_gives_its_owners(cli: Cli, trained: dict[str, str]) -> None:
    tree = json.loads(cli("data", "show", "data:tx@v1", "--json").stdout)
    digest = next(v for k, v in tree.items() if k in ("content_hash", "manifest_sha256", "sha256"))
    doc = json.loads(cli("lineage", digest[:20], "--json").stdout)
    assert {"from": doc["root"], "to": "data:tx@v1", "kind": "stored_in"} in doc["edges"]


BAD_INPUT = [
    (["run:abcdef123456"], 3, "no run"),
    (["data:tx@v9"], 3, "does not exist"),
    (["shop/ranker@canary"], 3, "no alias"),
    (["sha256:" + "0" * 64], 3, "no record"),
    (["data:tx@v1", "--depth", "0"], 2, "--depth"),
    (["data:tx@v1", "--depth", "-1"], 2, "--depth"),
    (["data:tx@v1", "--upstream", "--downstream"], 2, "not both"),
    (["data:tx@v1", "--json", "--dot"], 2, "one of"),
    (["not a ref"], 2, "unrecognised reference"),
]


def test_bad_input(cli: Cli, trained: dict[str, str]) -> None:
    # One vault for every case: building it is most of the time.
    for args, code, says in BAD_INPUT:
        proc = cli("lineage", *args, expect=code)
        assert proc.stdout == "", args
        first, second = proc.stderr.splitlines()[:2]
        assert first.startswith("error: "), args
        assert says in first, args
        assert second.startswith("hint: "), args


def _git(project: Path, *args: str) -> None:
    import subprocess

    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


TRAIN = "import labvault as lv\nlv.log_metric('auc', {auc})\nopen('model.bin', 'w').write('{auc}')\n"


def test_lineage_diff_names_the_schema_change_and_the_config_change(cli: Cli, project: Path) -> None:
    """Two versions trained on two snapshots, a column added and the config's lr changed between them."""
    _git(project, "init", "-q", "-b", "main")
    _git(project, "config", "user.email", "t@example.com")
    _git(project, "config", "user.name", "t")
    cli("init", "-q")
    (project / ".gitignore").write_text(".labvault/\ntx/\nmodel.bin\n")
    (project / "conf.yaml").write_text("lr: 0.1\n")
    (project / "tx").mkdir()
    for version, (header, row, auc) in enumerate((("amount", "1", 0.8), ("amount,country", "1,fr", 0.9)), start=1):
        (project / "tx" / "rows.csv").write_text(f"{header}\n" + f"{row}\n" * 20)
        cli("data", "add", "tx", "tx", "-q")
        if version == 2:
            (project / "conf.yaml").write_text("lr: 0.2\n")
        (project / "train.py").write_text(TRAIN.format(auc=auc))
        _git(project, "add", "-A")
        _git(project, "commit", "-qm", f"train {version}")
        cli("run", "--config", "conf.yaml", "--input", f"data:tx@v{version}", "--output", "model.bin", "--",
            sys.executable, "train.py")  # fmt: skip
        run_id = json.loads(cli("runs", "list", "--json", "--limit", "1").stdout)[0]["id"]
        cli("models", "register", "shop/ranker", "--from", f"run:{run_id}", "--artifact", "model.bin", "-q")
    text = cli("lineage", "diff", "shop/ranker@0.1.0", "shop/ranker@0.1.1").stdout
    lines = text.splitlines()
    assert lines[0].startswith("shop/ranker@0.1.0 (run:")
    tx = next(line for line in lines if line.startswith("  tx: "))
    assert "data:tx@v1 -> data:tx@v2: schema changed" in tx
    assert "schema: added country" in tx
    assert "  conf.yaml: lr: 0.1 -> 0.2" in lines
    assert any(line.startswith("code: ") and "1 commit, 3 files changed" in line for line in lines)
    assert {"  M conf.yaml", "  M train.py", "  M labvault.lock"} <= set(lines)
    assert any(line.split() == ["auc", "0.8", "->", "0.9", "(+0.1)"] for line in lines)
    doc = json.loads(cli("lineage", "diff", "shop/ranker@0.1.0", "shop/ranker@0.1.1", "--json").stdout)
    assert {k for k, v in doc["changed"].items() if v} == {"data", "code", "config", "metrics"}
    assert doc["data"][0]["schema"] == ["added country"]
    assert {"source": "conf.yaml", "key": "lr", "a": 0.1, "b": 0.2, "change": "changed"} in doc["config"]
    assert ("M", "train.py") in [(f["status"], f["path"]) for f in doc["code"]["files"]]
    # Bad input: one line and a hint, the right exit code, nothing on stdout.
    for args, code, says in (
        (["shop/ranker@0.1.0", "data:tx@v1"], 2, "model versions or runs"),
        (["shop/ranker@0.1.0", "shop/ranker@7.0.0"], 3, "7.0.0"),
        (["shop/ranker@0.1.0"], 2, "missing argument"),
    ):
        proc = cli("lineage", "diff", *args, expect=code)
        assert proc.stdout == ""
        first, second = proc.stderr.splitlines()[:2]
        assert first.startswith("error: "), args
        assert says in first.lower(), (args, first)
        assert second.startswith("hint: ")
