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


def test_an_up_to_date_stage_names_the_run_that_made_its_outputs(any_vault: Vault) -> None:
    """Reproduce's record of an up-to-date stage: the run that computed it, or, when that run is not
    in this vault (a lock from elsewhere), the outputs the lock recorded."""
    import dataclasses

    from labvault.services.reproduce.pipeline import up_to_date_stages

    vault = any_vault
    root = vault.root
    (root / "in.txt").write_text("one\n")
    (root / "other.txt").write_text("x\n")
    (root / "labvault.yaml").write_text(
        STAGES + "  side:\n    cmd: cat other.txt > side.txt\n    deps: [other.txt]\n    outs: [side.txt]\n"
    )
    reports = {r.name: r for r in vault.pipelines.run()}
    (root / "other.txt").write_text("y\n")
    again = {r.name: r for r in vault.pipelines.run()}
    assert {n: r.state for n, r in again.items()} == {"make": "up to date", "side": "ran"}
    side = vault.runs.get(str(again["side"].run_id))
    parent = vault.runs.get(str(side.parent_id))
    assert parent.capture["pipeline_up_to_date"]["make"]["run"] == reports["make"].run_id
    found = up_to_date_stages(vault.runs, parent)
    assert found["make"].id == reports["make"].run_id
    elsewhere = dict(parent.capture["pipeline_up_to_date"]["make"], run="0123456789ab")
    other = dataclasses.replace(parent, capture={"pipeline_up_to_date": {"make": elsewhere}})
    (art,) = up_to_date_stages(vault.runs, other)["make"].artifacts
    assert (art.path, f"sha256:{art.digest.hex}") == ("out.txt", elsewhere["outs"]["out.txt"])
