"""DVC import at the service level: templating (vars, ${}, foreach, matrix) and what is listed as untranslated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvault.errors import Conflict, ValidationError
from labvault.safeload import load_yaml
from labvault.services.pipelines.dvcimport import import_dvc, render_stages, write_stages


def _dvc(root: Path, text: str, files: dict[str, str] | None = None) -> Path:
    for name, content in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    (root / "dvc.yaml").write_text(text)
    return root / "dvc.yaml"


def test_vars_files_keys_and_typed_whole_references(tmp_path: Path) -> None:
    dvc = _dvc(
        tmp_path,
        """
vars:
  - custom.yaml:paths,model
  - {greeting: hi, flag: true}
stages:
  s:
    vars: [{local: 7}]
    cmd: echo ${greeting} ${model.name} ${paths[1]} ${flag} ${local} \\${literal}
    deps: ${paths}
""",
        {"custom.yaml": "paths: [a.txt, b.txt]\nmodel: {name: cnn}\nunused: 1\n"},
    )
    stage = import_dvc(dvc).stages["s"]
    assert stage["cmd"] == "echo hi cnn b.txt true 7 ${literal}"
    assert stage["deps"] == ["a.txt", "b.txt"]  # a whole reference keeps the list


def test_params_yaml_is_the_default_context_and_params_translate(tmp_path: Path) -> None:
    dvc = _dvc(
        tmp_path,
        """
stages:
  train:
    cmd: python train.py --lr ${train.lr}
    params:
      - train.lr
      - params.yaml: [train.epochs]
      - other.yaml: [opt.beta, opt.gamma]
      - whole.yaml:
""",
        {
            "params.yaml": "train: {lr: 0.1, epochs: 3}\n",
            "other.yaml": "opt: {beta: 1, gamma: 2}\n",
            "whole.yaml": "a: 1\nb: {c: 2}\n",
        },
    )
    got = import_dvc(dvc)
    assert got.stages["train"]["cmd"] == "python train.py --lr 0.1"
    assert got.stages["train"]["params"] == [
        "train.lr",
        "train.epochs",
        "other.yaml:opt.beta",
        "other.yaml:opt.gamma",
        "whole.yaml:a",
        "whole.yaml:b",
    ]
    assert any("whole.yaml (whole file)" in n for n in got.untranslated)


def test_foreach_list_dicts_and_mapping_expand_with_dvc_names(tmp_path: Path) -> None:
    dvc = _dvc(
        tmp_path,
        """
vars:
  - splits: [train, test]
stages:
  a:
    foreach: ${splits}
    do: {cmd: "echo ${item}", outs: ["out/${item}.txt"]}
  b:
    foreach: [{n: 1}, {n: 2}]
    do: {cmd: "echo ${item.n}"}
  c:
    foreach: {us: 1, eu: 2}
    do: {cmd: "echo ${key} ${item}"}
""",
    )
    stages = import_dvc(dvc).stages
    assert list(stages) == ["a@train", "a@test", "b@0", "b@1", "c@us", "c@eu"]
    assert stages["a@test"] == {"cmd": "echo test", "outs": ["out/test.txt"]}
    assert stages["b@1"]["cmd"] == "echo 2"
    assert stages["c@eu"]["cmd"] == "echo eu 2"


def test_values_that_cannot_name_a_stage_name_it_by_index(tmp_path: Path) -> None:
    dvc = _dvc(
        tmp_path,
        """
stages:
  f:
    foreach: [data/a.csv, b.csv]
    do: {cmd: "wc ${item}", deps: ["${item}"]}
  m:
    matrix: {path: [x/1, x/2], mode: [fast]}
    cmd: run ${item.path} ${item.mode}
""",
    )
    stages = import_dvc(dvc, expand=True).stages
    assert list(stages) == ["f@0", "f@1", "m@path0-fast", "m@path1-fast"]
    assert stages["f@0"]["deps"] == ["data/a.csv"]
    assert stages["m@path1-fast"]["cmd"] == "run x/2 fast"


def test_matrix_is_kept_or_expanded(tmp_path: Path) -> None:
    dvc = _dvc(
        tmp_path,
        """
vars: [{models: [cnn, xgb], base: data}]
stages:
  ev:
    matrix: {model: "${models}", split: [val, test]}
    cmd: python eval.py ${item.model} ${item.split} ${base}
    deps: ["${base}/${item.split}.csv"]
""",
    )
    kept = import_dvc(dvc).stages
    assert kept == {
        "ev": {
            "matrix": {"model": ["cnn", "xgb"], "split": ["val", "test"]},
            "cmd": "python eval.py ${item.model} ${item.split} data",
            "deps": ["data/${item.split}.csv"],
        }
    }
    expanded = import_dvc(dvc, expand=True).stages
    assert list(expanded) == ["ev@cnn-val", "ev@cnn-test", "ev@xgb-val", "ev@xgb-test"]
    assert expanded["ev@xgb-test"]["deps"] == ["data/test.csv"]


def test_untranslatable_items_are_listed(tmp_path: Path) -> None:
    dvc = _dvc(
        tmp_path,
        """
stages:
  s:
    cmd: [make a, make b]
    desc: builds
    wdir: sub
    frozen: true
    always_changed: true
    outs: [{model.pkl: {cache: false, persist: true}}]
    metrics: [{m.json: {cache: false}}]
    plots: [{roc.json: {x: fpr, y: tpr}}, p.png]
    meta: {owner: me}
plots: [{roc: {x: fpr}}]
artifacts: {m: {path: model.pkl}}
""",
        {"data/raw.xml.dvc": "outs: []\n", "dvc.lock": "schema: '2.0'\n", ".dvc/config": "", ".git/x.dvc": ""},
    )
    got = import_dvc(dvc)
    assert got.stages["s"] == {
        "cmd": "make a && make b",
        "wdir": "sub",
        "outs": ["model.pkl"],
        "metrics": ["m.json"],
        "artifacts": ["roc.json", "p.png"],
        "frozen": True,
        "always_changed": True,
    }
    text = "\n".join(got.untranslated)
    for fragment in (
        "model.pkl: cache: false",
        "model.pkl: persist: true",
        "roc.json: x: fpr",
        "desc: builds",
        "meta:",
        "top-level plots",
        "top-level artifacts",
        "dvc.lock",
        "data/raw.xml.dvc: data tracked by DVC",
    ):
        assert fragment in text
    assert not any(n.startswith((".dvc", ".git")) for n in got.untranslated)  # DVC's own folder is no data
    assert "m.json" not in text  # a metrics file's cache flag is moot: labvault records metrics in the run


def test_dvc_yaml_in_a_subfolder_gets_its_folder_as_wdir(tmp_path: Path) -> None:
    sub = tmp_path / "pipe"
    sub.mkdir()
    dvc = _dvc(
        sub,
        "stages:\n  a: {cmd: x}\n  b: {cmd: y, wdir: ..}\n  c: {cmd: z, wdir: ../..}\n".replace(
            "  c: {cmd: z, wdir: ../..}\n", ""
        ),
    )
    stages = import_dvc(dvc, project_root=tmp_path).stages
    assert stages["a"]["wdir"] == "pipe"
    assert "wdir" not in stages["b"]
    (sub / "dvc.yaml").write_text("stages:\n  c: {cmd: z, wdir: ../..}\n")
    with pytest.raises(ValidationError, match="leaves the project"):
        import_dvc(dvc, project_root=tmp_path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("stages: [1, 2]", "stages must be a mapping"),
        ("stages:\n  a: {cmd: 5}", "a.cmd"),
        ("stages:\n  a: {cmd: x, deps: {p: 1}}", "a.deps"),
        ("stages:\n  a: {cmd: x, outs: [{p: 1, q: 2}]}", "a.outs"),
        ("stages:\n  a: {cmd: x, frozen: maybe}", "a.frozen"),
        ("stages:\n  a: {deps: [x]}", "has no cmd"),
        ("stages:\n  a: {cmd: 'echo ${nope}'}", "${nope} is not defined"),
        ("vars: [{d: {x: 1}}]\nstages:\n  a: {cmd: 'echo ${d} now'}", "cannot be put inside text"),
        ("stages:\n  a: {matrix: {x: []}, cmd: y}", "matrix.x is an empty list"),
        ("stages:\n  a: {foreach: [], do: {cmd: y}}", "foreach is an empty list"),
        ("stages:\n  'a b': {cmd: y}", "not a stage name"),
        ("stages:\n  a: {cmd: y, wdir: /etc}", "leaves the project"),
        ("vars: [missing.yaml]\nstages:\n  a: {cmd: y}", "missing.yaml does not exist"),
        (
            "stages:\n  a:\n    matrix: {"
            + ", ".join(f"k{i}: [" + ", ".join(str(j) for j in range(20)) + "]" for i in range(6))
            + "}\n    cmd: y",
            "expands to more than",
        ),
    ],
)
def test_bad_dvc_yaml_is_a_validation_error(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ValidationError) as err:
        import_dvc(_dvc(tmp_path, text))
    assert says in str(err.value)


def test_write_keeps_other_sections_and_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "labvault.yaml").write_text("# team policies\nmodels:\n  a/b: {prod: {approvals: 1}}  # keep\n")
    imported = import_dvc(_dvc(tmp_path, "stages:\n  a: {cmd: x}\n"))
    write_stages(tmp_path, imported)
    text = (tmp_path / "labvault.yaml").read_text()
    assert text.startswith("# team policies\nmodels:\n  a/b: {prod: {approvals: 1}}  # keep\n")
    with pytest.raises(Conflict, match="already has stages"):
        write_stages(tmp_path, imported)
    assert (tmp_path / "labvault.yaml").read_text() == text
    again = import_dvc(_dvc(tmp_path, "stages:\n  b: {cmd: y}\n"))
    write_stages(tmp_path, again, force=True)
    doc = load_yaml(tmp_path / "labvault.yaml")
    assert doc["stages"] == {"b": {"cmd": "y"}}
    assert doc["models"] == {"a/b": {"prod": {"approvals": 1}}}
    assert (tmp_path / "labvault.yaml").read_text().count("# stages imported from") == 1


def test_an_unclosed_reference_with_much_space_is_read_in_linear_time(tmp_path: Path) -> None:
    import time

    cmd = "echo ${" + " " * 3000 + "x and ${a " * 200
    started = time.monotonic()
    stages = import_dvc(_dvc(tmp_path, f"stages:\n  s: {{cmd: '{cmd}'}}\n")).stages
    assert time.monotonic() - started < 1.0
    assert stages["s"]["cmd"] == cmd  # no reference closes: the text stays as written


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["x", "${a}", "${item}", "${item.k}", "${a.b[0]}", "\\${a}", "${", "params.yaml", "p.yaml:a"]),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "k", "cmd", "b"]), inner, max_size=3)
    ),
    max_leaves=12,
)
_KEYS = [
    "cmd",
    "deps",
    "params",
    "outs",
    "metrics",
    "plots",
    "wdir",
    "frozen",
    "always_changed",
    "vars",
    "foreach",
    "do",
    "matrix",
    "desc",
]


@settings(
    max_examples=1000 if os.environ.get("LABVAULT_TEST_FULL") else 60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    top_vars=st.one_of(
        st.none(), st.lists(st.dictionaries(st.sampled_from(["a", "item"]), _VALUES, max_size=2), max_size=2)
    ),
    stages=st.dictionaries(
        st.sampled_from(["s", "t", "u@1", "a b"]),
        st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=5),
        max_size=3,
    ),
)
def test_any_dvc_yaml_imports_or_is_refused_cleanly(tmp_path: Path, top_vars: object, stages: object) -> None:
    """Whatever dvc.yaml holds, the import gives stages or a labvault error (exit 2), nothing else."""
    doc = {"stages": stages} if top_vars is None else {"vars": top_vars, "stages": stages}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc))
    try:
        got = import_dvc(tmp_path / "dvc.yaml")
    except ValidationError:
        return
    for name, stage in got.stages.items():
        assert isinstance(name, str)
        assert isinstance(stage["cmd"], str)
        yaml.safe_load(render_stages({name: stage}))  # what would be written reads back
