"""``labvault pipeline import`` through the real executable: DVC's get-started project, and hostile dvc.yaml files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labvault.safeload import load_yaml
from tests.e2e.conftest import Cli

# DVC's documented get-started pipeline (example-get-started), with tiny scripts the test writes.
GET_STARTED_DVC_YAML = """\
stages:
  prepare:
    cmd: python src/prepare.py data/data.xml
    deps:
    - data/data.xml
    - src/prepare.py
    params:
    - prepare.seed
    - prepare.split
    outs:
    - data/prepared
  featurize:
    cmd: python src/featurization.py data/prepared data/features
    deps:
    - data/prepared
    - src/featurization.py
    params:
    - featurize.max_features
    - featurize.ngrams
    outs:
    - data/features
  train:
    cmd: python src/train.py data/features model.pkl
    deps:
    - data/features
    - src/train.py
    params:
    - train.min_split
    - train.n_est
    - train.seed
    outs:
    - model.pkl
  evaluate:
    cmd: python src/evaluate.py model.pkl data/features
    deps:
    - data/features
    - model.pkl
    - src/evaluate.py
    outs:
    - eval/importance.png
    metrics:
    - eval/metrics.json:
        cache: false
    plots:
    - eval/plots/sklearn/roc/test.json:
        template: simple
        x: fpr
        y: tpr
        title: Receiver operating characteristic (ROC)
"""

PARAMS = """\
prepare:
  split: 0.20
  seed: 20170428
featurize:
  max_features: 100
  ngrams: 1
train:
  seed: 20170428
  n_est: 50
  min_split: 0.01
"""

_SCRIPTS = {
    "prepare.py": """
import os, random, sys, yaml
p = yaml.safe_load(open("params.yaml"))["prepare"]
random.seed(p["seed"])
rows = open(sys.argv[1]).read().split("<row ")[1:]
os.makedirs("data/prepared", exist_ok=True)
train = [r for r in rows if random.random() > p["split"]]
test = [r for r in rows if r not in train]
open("data/prepared/train.tsv", "w").write("".join(train))
open("data/prepared/test.tsv", "w").write("".join(test))
""",
    "featurization.py": """
import os, sys, yaml
p = yaml.safe_load(open("params.yaml"))["featurize"]
os.makedirs(sys.argv[2], exist_ok=True)
for name in ("train", "test"):
    words = open(os.path.join(sys.argv[1], name + ".tsv")).read().split()
    counts = {}
    for w in words[: p["max_features"] * 10]:
        counts[w] = counts.get(w, 0) + 1
    open(os.path.join(sys.argv[2], name + ".csv"), "w").write(
        "".join(f"{w},{c}\\n" for w, c in sorted(counts.items())))
""",
    "train.py": """
import sys, yaml
p = yaml.safe_load(open("params.yaml"))["train"]
rows = open(sys.argv[1] + "/train.csv").read().splitlines()
open(sys.argv[2], "w").write(f"model n_est={p['n_est']} rows={len(rows)}\\n")
""",
    "evaluate.py": """
import json, os, sys
model = open(sys.argv[1]).read()
rows = open(sys.argv[2] + "/test.csv").read().splitlines()
os.makedirs("eval/plots/sklearn/roc", exist_ok=True)
json.dump({"avg_prec": len(rows) / 1000, "roc_auc": len(model) / 100}, open("eval/metrics.json", "w"), sort_keys=True)
json.dump([{"fpr": 0, "tpr": 0}, {"fpr": 1, "tpr": 1}], open("eval/plots/sklearn/roc/test.json", "w"))
open("eval/importance.png", "wb").write(bytes(range(256)))
""",
}

STAGE_ORDER = ("prepare", "featurize", "train", "evaluate")


def write_get_started(root: Path) -> None:
    """The get-started project: dvc.yaml, params.yaml, the scripts, and data/data.xml (generated here)."""
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    for name, code in _SCRIPTS.items():
        (root / "src" / name).write_text(code.lstrip())
    (root / "params.yaml").write_text(PARAMS)
    (root / "dvc.yaml").write_text(GET_STARTED_DVC_YAML)
    words = ["model", "data", "python", "stack", "question", "answer", "tag", "vote"]
    rows = [f'<row Id="{i}" Body="{words[i % 8]} {words[(i * 7) % 8]} {words[(i * 3) % 8]}" />\n' for i in range(400)]
    (root / "data" / "data.xml").write_text("<posts>\n" + "".join(rows) + "</posts>\n")
    (root / "data" / "data.xml.dvc").write_text("outs:\n- md5: 0\n  path: data.xml\n")


def run_by_hand(root: Path, cmds: list[str]) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for cmd in cmds:
        subprocess.run(["sh", "-c", cmd], cwd=root, env=env, check=True, timeout=60)


def file_digests(root: Path, rels: list[str]) -> dict[str, str]:
    out = {}
    for rel in rels:
        path = root / rel
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            out[f.relative_to(root).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def test_get_started_project_imports_and_its_commands_give_the_same_outputs(cli: Cli, project: Path) -> None:
    write_get_started(project)
    (project / "labvault.yaml").write_text("# promotion rules\nmodels:\n  demo/clf:\n    prod: {approvals: 1}\n")
    proc = cli("pipeline", "import", "dvc.yaml")
    assert "imported 4 stage(s)" in proc.stdout
    assert "data/data.xml.dvc: data tracked by DVC" in proc.stderr
    assert "eval/plots/sklearn/roc/test.json: template: simple not translated" in proc.stderr
    doc = load_yaml(project / "labvault.yaml")
    assert doc["models"] == {"demo/clf": {"prod": {"approvals": 1}}}
    assert list(doc["stages"]) == list(STAGE_ORDER)
    assert doc["stages"]["train"] == {
        "cmd": "python src/train.py data/features model.pkl",
        "deps": ["data/features", "src/train.py"],
        "params": ["train.min_split", "train.n_est", "train.seed"],
        "outs": ["model.pkl"],
    }
    assert doc["stages"]["evaluate"]["metrics"] == ["eval/metrics.json"]
    assert doc["stages"]["evaluate"]["artifacts"] == ["eval/plots/sklearn/roc/test.json"]

    # The imported commands, run in order, write what DVC's commands write.
    dvc_doc = load_yaml(project / "dvc.yaml")
    outs = ["data/prepared", "data/features", "model.pkl", "eval"]
    run_by_hand(project, [dvc_doc["stages"][s]["cmd"] for s in STAGE_ORDER])
    by_dvc = file_digests(project, outs)
    for rel in outs:
        subprocess.run(["rm", "-rf", str(project / rel)], check=True)
    run_by_hand(project, [doc["stages"][s]["cmd"] for s in STAGE_ORDER])
    assert file_digests(project, outs) == by_dvc
    assert len(by_dvc) == 8

    cli("pipeline", "import", expect=4)  # stages are there now: --force replaces them
    cli("pipeline", "import", "--force", "--json", "--expand")


def _alias_bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\nstages:\n  s: {cmd: x, deps: *a8}\n"


def _template_bomb() -> str:
    big = "x" * 100_000
    return f"vars: [{{big: {big}}}]\nstages:\n  s:\n    cmd: '" + "${big}" * 1000 + "'\n"


HOSTILE = [
    ("alias-bomb", _alias_bomb(), 2, "alias"),
    ("huge", "stages:\n" + "#" * (11 * 1024 * 1024) + "\n", 2, "larger than 10 MiB"),
    ("deep", "stages: " + "[" * 200 + "]" * 200, 2, "nested more than"),
    ("not-utf8", b"stages:\n  s: {cmd: '\xff\xfe'}\n", 2, "not UTF-8"),
    ("syntax", "stages: {a: [}\n", 2, "YAML syntax error"),
    ("python-tag", "stages: !!python/object/apply:os.system [id]\n", 2, "dvc.yaml"),
    ("top-list", "- 1\n- 2\n", 2, "must be a mapping"),
    ("cmd-number", "stages:\n  s: {cmd: 5}\n", 2, "s.cmd"),
    ("outs-number", "stages:\n  s: {cmd: x, outs: 3}\n", 2, "s.outs"),
    ("params-bad", "stages:\n  s: {cmd: x, params: [{f.yaml: 3}]}\n", 2, "params"),
    (
        "matrix-bomb",
        "stages:\n  s:\n    matrix: {"
        + ", ".join(f"k{i}: [{','.join('abcdefghij')}]" for i in range(8))
        + "}\n    cmd: x\n",
        2,
        "expands to more than",
    ),
    ("template-bomb", _template_bomb(), 2, "template bomb"),
    ("undefined", "stages:\n  s: {cmd: 'echo ${a.b}'}\n", 2, "is not defined"),
    ("wdir-escape", "stages:\n  s: {cmd: x, wdir: ../../etc}\n", 2, "leaves the project"),
    ("vars-escape-missing", "vars: [../../nope.yaml]\nstages:\n  s: {cmd: x}\n", 2, "does not exist"),
]


@pytest.mark.parametrize(("case", "content", "code", "says"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_dvc_yaml_is_refused_in_one_line(
    cli: Cli, project: Path, case: str, content: str | bytes, code: int, says: str
) -> None:
    (project / "labvault.yaml").write_text("models: {}\n")
    path = project / "dvc.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = cli("pipeline", "import", expect=code, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: "), proc.stderr
    assert says in lines[0], proc.stderr
    assert len(lines) <= 2
    assert len(lines) == 1 or lines[1].startswith("hint: ")
    assert (project / "labvault.yaml").read_text() == "models: {}\n"  # nothing written


def test_missing_or_special_dvc_yaml(cli: Cli, project: Path) -> None:
    assert "does not exist" in cli("pipeline", "import", "nope.yaml", expect=3).stderr
    os.mkfifo(project / "fifo.yaml")
    assert "not a regular file" in cli("pipeline", "import", "fifo.yaml", expect=2, timeout=30).stderr
    (project / "labvault.yaml").write_text("- a list\n")
    (project / "dvc.yaml").write_text("stages:\n  s: {cmd: x}\n")
    assert "must be a mapping" in cli("pipeline", "import", expect=2).stderr
    assert (project / "labvault.yaml").read_text() == "- a list\n"
    proc = cli("pipeline", "import", "--dry-run")
    assert proc.stdout.startswith("stages:\n  s:\n    cmd: x")


def test_a_hostile_labvault_yaml_is_refused_and_left_alone(cli: Cli, project: Path) -> None:
    (project / "dvc.yaml").write_text("stages:\n  s: {cmd: x}\n")
    bomb = _alias_bomb().replace("stages:\n  s: {cmd: x, deps: *a8}\n", "models: *a8\n")
    (project / "labvault.yaml").write_text(bomb)
    proc = cli("pipeline", "import", "--force", expect=2, timeout=60)
    assert proc.stderr.startswith("error: labvault.yaml")
    assert (project / "labvault.yaml").read_text() == bomb
    elsewhere = project / "elsewhere.yaml"
    elsewhere.write_text("models: {}\n")
    (project / "labvault.yaml").unlink()
    (project / "labvault.yaml").symlink_to(elsewhere)
    cli("pipeline", "import")
    assert elsewhere.read_text() == "models: {}\n"  # the link is replaced, never written through
    assert "stages:" in (project / "labvault.yaml").read_text()
