"""Pipeline versions from Python, on SQLite and PostgreSQL: runs name the definition they ran (and its
tag), lineage shows it, and one ``vault.pipelines`` reads the definition afresh for every run."""

from __future__ import annotations

from labvault.vault import Vault

STAGES = """\
stages:
  make:
    cmd: cat in.txt > out.txt
    deps: [in.txt]
    outs: [out.txt]
"""


def _pipeline_nodes(vault: Vault, ref: str) -> set[str]:
    return {n.ref for n in vault.lineage.upstream(ref).nodes if n.kind == "pipeline"}


def test_runs_name_their_pipeline_version(any_vault: Vault) -> None:
    root = any_vault.root
    (root / "in.txt").write_text("one\n")
    (root / "labvault.yaml").write_text(STAGES)
    pipes = any_vault.pipelines
    (first,) = pipes.run()
    stage = any_vault.runs.get(str(first.run_id))
    definition = stage.tags["pipeline.definition"]
    assert stage.capture["pipeline_version"] == {"definition": definition, "tag": None}
    assert _pipeline_nodes(any_vault, f"run:{stage.id}") == {definition}
    pipes.tag("v1")
    assert _pipeline_nodes(any_vault, f"run:{stage.id}") == {"pipeline:v1"}  # a later tag is found
    # The same object, a new definition: the next run names it, not the one memoised before.
    (root / "labvault.yaml").write_text(STAGES.replace("cat in.txt", "cat  in.txt"))
    (second,) = pipes.run()
    again = any_vault.runs.get(str(second.run_id))
    assert again.tags["pipeline.definition"] != definition
    assert "pipeline.tag" not in again.tags
    parent = any_vault.runs.get(str(again.parent_id))
    assert parent.tags["pipeline.definition"] == again.tags["pipeline.definition"]
