"""``vault.pipelines``: status, run, checkout, dag, show, tag and log of the pipeline in ``labvault.yaml``.

A no-op ``status`` or ``run`` reads ``labvault.lock`` and the caches under ``.labvault/cache/pipelines``
only: the metadata store is opened (``meta``, lazily) the first time a stage is not up to date.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labvault.errors import NotFound, ValidationError
from labvault.refs import Digest
from labvault.services.pipelines.fingerprint import Fingerprint, current_fingerprint
from labvault.services.pipelines.hashing import HashCache, cache_dir
from labvault.services.pipelines.inputs import StageInputs
from labvault.services.pipelines.plan import Decision, Planner
from labvault.services.pipelines.select import StageReport, select_stages
from labvault.services.pipelines.spec import Pipeline, Stage
from labvault.services.pipelines.speccache import cached_pipeline
from labvault.services.snapshots.lockfile import LOCK_NAME, read_stages, update_stages
from labvault.storage.contained import write_text
from labvault.storage.objects.protocol import ObjectStore

if TYPE_CHECKING:
    from labvault.services.pipelines.executor import Executor
    from labvault.services.snapshots.service import DataService
    from labvault.services.tracking import Tracking
    from labvault.storage.meta.store import MetaStore

__all__ = ["Pipelines"]


class Pipelines:
    def __init__(
        self,
        *,
        objects: ObjectStore,
        meta: Callable[[], MetaStore],
        root: Path,
        vault_dir: Path,
        user: Callable[[], str],
        runs: Callable[[], Tracking],
        data: Callable[[], DataService],
    ) -> None:
        self.objects = objects
        self._open_meta = meta
        self.root = root
        self.vault_dir = vault_dir
        self._user = user
        self._runs = runs
        self._data = data
        self._fingerprint: Fingerprint | None = None
        self.argv: list[str] = ["labvault", "pipeline", "run"]
        #: Set by ``reproduce``: the stage runs hang under this (already open) run, which the caller
        #: ends; no cache row is written (a reproduction judges the result, it does not feed the cache).
        self.parent_run: str | None = None
        self.use_cache = True
        #: Extra environment variables of every stage's command (a rebuilt environment's PATH).
        self.stage_env: dict[str, str] = {}
        self._memo: dict[str, dict[str, str]] = {}
        self.inputs = StageInputs(objects=objects, meta=lambda: self.meta, root=root, vault_dir=vault_dir, data=data)

    @cached_property
    def meta(self) -> MetaStore:
        return self._open_meta()

    # -- reading ------------------------------------------------------------------------------
    def pipeline(self) -> Pipeline:
        """The resolved stages of ``labvault.yaml`` (from the spec cache when nothing changed)."""
        return cached_pipeline(self.root, self.vault_dir)

    def fingerprint(self) -> Fingerprint:
        if self._fingerprint is None:
            self._fingerprint = current_fingerprint(cache_dir(self.vault_dir))
        return self._fingerprint

    def planner(self, pipeline: Pipeline, *, ignore_env: bool = False) -> Planner:
        def env() -> tuple[str, dict[str, Any]]:
            fp = self.fingerprint()
            return fp.digest, fp.doc

        def lookup(key: str) -> dict[str, Any] | None:
            outs = self.inputs.cached_outs(key)
            return None if outs is None else {p: [d.removeprefix("sha256:"), k] for p, (d, k) in outs.items()}

        return Planner(
            pipeline,
            read_stages(self.root),
            HashCache(self.root, self.vault_dir),
            env=env,
            old_env=self.inputs.old_env,
            data_dep=self.inputs.data_dep,
            lookup=lookup,
            ignore_env=ignore_env,
            trees=self.inputs.tree_files,
        )

    # -- status -------------------------------------------------------------------------------
    def status(
        self,
        stages: list[str] | None = None,
        *,
        downstream: bool = False,
        force: bool = False,
        ignore_env: bool = False,
    ) -> list[Decision]:
        """For each stage: up to date / will restore from cache / will run, and why."""
        pipeline = self.pipeline()
        selected = select_stages(pipeline, list(stages or []), downstream=downstream)
        planner = self.planner(pipeline, ignore_env=ignore_env)
        forced = set(stages or selected) if force else set()
        out = [planner.decide(name, force=name in forced) for name in selected]
        planner.hashes.save()
        return out

    # -- run ----------------------------------------------------------------------------------
    def run(
        self,
        stages: list[str] | None = None,
        *,
        force: bool = False,
        downstream: bool = False,
        jobs: int | None = None,
        executor: str | Executor = "local",
        keep_going: bool = False,
        ignore_env: bool = False,
        say: Callable[[str], None] = lambda _line: None,
    ) -> list[StageReport]:
        """Bring the pipeline up to date; a failed stage is a report with state ``failed``."""
        self._memo.clear()  # labvault.yaml may have changed since the last run of this object
        pipeline = self.pipeline()
        selected = select_stages(pipeline, list(stages or []), downstream=downstream)
        planner = self.planner(pipeline, ignore_env=ignore_env)
        forced = set(stages or selected) if force else set()
        if not forced:
            # The common case first, without starting anything: is every stage up to date?
            quick = Planner(
                pipeline,
                planner.lock,
                planner.hashes,
                env=planner._env,
                old_env=self.inputs.old_env,
                data_dep=self.inputs.data_dep,
                lookup=lambda _k: None,
                ignore_env=ignore_env,
            )
            decisions = [quick.decide(n) for n in selected]
            if all(d.state in ("up to date", "frozen") for d in decisions):
                planner.hashes.save()
                return [StageReport(d.name, "up to date", d.reasons, d.key) for d in decisions]
        from labvault.services.pipelines.runner import Runner

        jobs = jobs or os.cpu_count() or 1
        # An Executor object is used as given (and closed here); a string names one.
        runner_executor = self._executor(executor, jobs) if isinstance(executor, str) else executor
        try:
            runner = Runner(
                self, pipeline, planner, runner_executor, jobs=jobs, forced=forced, keep_going=keep_going, say=say
            )
            return runner.run(selected)
        finally:
            runner_executor.close()
            planner.hashes.save()

    def _executor(self, spec: str, jobs: int) -> Executor:
        if spec == "local":
            from labvault.services.pipelines.local import LocalExecutor

            return LocalExecutor(self.root, jobs=jobs)
        if spec.startswith("dask://"):
            import importlib

            try:
                # By name: the Dask executor and its store locations are an optional part (labvault[dask]).
                module = importlib.import_module("labvault.services.pipelines.dask_executor")
                location = importlib.import_module("labvault.storage.objects.location").location_of(self.objects)
            except ImportError as exc:
                raise ValidationError(
                    f"--executor {spec} needs the Dask executor, which is not installed ({exc})",
                    hint="install labvault[dask]",
                ) from None
            executor: Executor = module.DaskExecutor(spec, location)
            return executor
        raise ValidationError(f"unknown executor {spec!r}", hint="use --executor local or --executor dask://HOST:PORT")

    # -- what the runner records --------------------------------------------------------------
    def write_log(self, stage: str, text: str) -> str:
        folder = cache_dir(self.vault_dir) / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        name = stage.replace("/", "_") + ".log"
        write_text(folder / name, text)
        return os.path.relpath(folder / name, self.root)

    def record_cache(self, key: str, stage: str, outs: dict[str, tuple[str, str]], run_id: str | None) -> None:
        """One transaction: the cache row and its object references (the objects are stored already)."""
        from labvault.entities import utcnow
        from labvault.storage.meta.repos import pipelines as repo
        from labvault.storage.meta.repos.object_refs import add_refs

        hexkey = key.removeprefix("sha256:")
        if not self.use_cache:
            return
        refs = [(Digest(d.removeprefix("sha256:")), "tree" if k == "dir" else "blob") for d, k in outs.values()]
        with self.meta.transaction() as conn:
            repo.insert_cached(
                conn,
                key=hexkey,
                stage=stage,
                outs={p: [d.removeprefix("sha256:"), k] for p, (d, k) in outs.items()},
                run_id=run_id,
                user=self._user(),
                now=utcnow(),
            )
            add_refs(conn, f"stage:{hexkey}", refs)  # type: ignore[arg-type]

    def record_up_to_date(self, run_id: str, keys: dict[str, str]) -> None:
        """The pipeline run names each stage it found up to date (stage -> key): the outputs
        ``labvault.lock`` records for it and the run that computed them, so that ``reproduce``
        compares those stages too. The outputs are referenced by the run (gc keeps them)."""
        from labvault.storage.meta.repos import pipelines as repo

        if not keys:
            return
        recorded = read_stages(self.root)
        with self.meta.read() as conn:
            producers = repo.cached_runs(conn, sorted({k.removeprefix("sha256:") for k in keys.values()}))
        doc: dict[str, Any] = {}
        refs: list[tuple[Digest, Any]] = []
        for name, key in sorted(keys.items()):
            entry = recorded.get(name) or {}
            trees = set(entry.get("trees") or [])
            outs = {p: d for p, d in (entry.get("outs") or {}).items() if d is not None}
            for path, digest in outs.items():
                refs.append((Digest(digest.removeprefix("sha256:")), "tree" if path in trees else "blob"))
            doc[name] = {
                "key": key,
                "outs": outs,
                "trees": sorted(trees & set(outs)),
                "run": producers.get(key.removeprefix("sha256:")),
            }
        self._runs().update_capture(run_id, {"pipeline_up_to_date": doc}, refs=refs)

    def update_lock_stage(self, name: str, entry: dict[str, Any], *, new_outs: list[str]) -> None:
        update_stages(self.root, self.vault_dir, {name: entry})
        data = self._data()
        for out in new_outs:
            data.ignore_in_git(self.root / out)

    def start_pipeline_run(self) -> str:
        runs = self._runs()
        with self.objects.batch():
            fp = self.fingerprint()
            self.objects.put_bytes(fp.text.encode())  # so that a later "why" can name the packages that changed
            version = self.version_tags()
        if self.parent_run is not None:
            runs.set_tags(self.parent_run, version)
            run_id = self.parent_run
        else:
            run_id = runs.create(
                name="pipeline", command=self.argv, cwd=self.root, tags={"pipeline": "run", **version}
            ).id
        self.record_version(run_id)
        return run_id

    def record_version(self, run_id: str) -> None:
        """The run's capture names its pipeline version (lineage reads it there); the stored
        definition is referenced by the run, so gc keeps it."""
        version = self.version_tags()
        if "pipeline.definition" not in version:
            return
        doc = {"definition": version["pipeline.definition"], "tag": version.get("pipeline.tag")}
        digest = Digest(version["pipeline.definition"].removeprefix("sha256:"))
        self._runs().update_capture(run_id, {"pipeline_version": doc}, refs=[(digest, "blob")])

    def version_tags(self) -> dict[str, str]:
        """What points a run to its pipeline version: ``pipeline.definition`` (the digest of labvault.yaml,
        stored so lineage can show it) and ``pipeline.tag`` when a ``pipeline:NAME`` tag has that definition."""
        if "version" not in self._memo:
            from labvault.services.pipelines.tags import definition_tags

            self._memo["version"] = definition_tags(self.objects, self.meta, self.root)
        return dict(self._memo["version"])

    def finish_run(self, run_id: str, *, status: str, exit_code: int, error: str | None) -> None:
        if run_id == self.parent_run:
            return  # its owner (reproduce) ends it, after storing its report
        self._runs().finish(run_id, status=status, exit_code=exit_code, error=error)  # type: ignore[arg-type]

    def record_stage_run(
        self, parent: str, stage: Stage, decision: Decision, outs: dict[str, tuple[str, str]], **kw: Any
    ) -> str:
        from labvault.services.pipelines.record import record_stage_run

        run_id = record_stage_run(
            self._runs(), self.root, parent, stage, decision, outs, version=self.version_tags(), **kw
        )
        self.record_version(run_id)
        return run_id

    # -- checkout -----------------------------------------------------------------------------
    def checkout(self, stages: list[str] | None = None) -> dict[str, int]:
        """Restore every stage's recorded outputs (labvault.lock) from the object store, verified."""
        recorded = read_stages(self.root)
        if not recorded:
            raise NotFound(f"{LOCK_NAME} records no stages", hint="run the pipeline once with `labvault pipeline run`")
        for s in stages or []:
            if s not in recorded:
                raise NotFound(f"{LOCK_NAME} records no stage {s!r}", hint="see `labvault pipeline status`")
        from labvault.services.pipelines.outputs import restore_output

        hashes = HashCache(self.root, self.vault_dir)
        written: dict[str, int] = {}
        try:
            for name in sorted(stages or recorded):
                entry = recorded[name]
                trees = set(entry.get("trees") or [])
                count = 0
                for path, digest in sorted(entry["outs"].items()):
                    if digest is None or hashes.digest(path) == digest:
                        continue
                    kind = "dir" if path in trees else "file"
                    count += restore_output(self.objects, self.root, self.vault_dir, hashes, path, digest, kind)
                written[name] = count
        finally:
            hashes.save()
        return written

    # -- show, dag ----------------------------------------------------------------------------
    def show(self, name: str) -> dict[str, Any]:
        pipeline = self.pipeline()
        if name not in pipeline.stages:
            raise NotFound(f"no stage named {name!r}", hint="list the stages with `labvault pipeline status`")
        stage = pipeline.stages[name]
        entry = read_stages(self.root).get(name)
        (decision,) = [d for d in self.status([name]) if d.name == name]
        return {
            "stage": name,
            **{k: v for k, v in stage.to_json().items() if k != "name"},
            "upstream": list(pipeline.upstream[name]),
            "state": decision.to_json()["state"],
            "reasons": decision.reasons,
            "key": decision.key,
            "last": entry,
        }

    def dag(self) -> dict[str, Any]:
        pipeline = self.pipeline()
        return {
            "stages": list(pipeline.stages),
            "edges": [[u, n] for n in pipeline.order() for u in pipeline.upstream[n]],
        }

    # -- tags and log -------------------------------------------------------------------------
    def tag(self, name: str, *, message: str = "") -> dict[str, Any]:
        """An immutable, named pipeline version ``pipeline:NAME``: definition + lock + commit."""
        from labvault.services.pipelines.tags import tag_pipeline

        return tag_pipeline(self.objects, self.meta, self.root, name, message=message, user=self._user())

    def log(self) -> dict[str, Any]:
        """The pipeline tags and the pipeline runs, newest first."""
        from labvault.services.pipelines.tags import pipeline_log

        return pipeline_log(self.meta, self._runs())
