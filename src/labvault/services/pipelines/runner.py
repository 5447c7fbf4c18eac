"""``pipeline run``: decide each stage when its upstream is done, then skip, restore or run it.

Stages whose upstream stages are done are decided and started at once, up to ``--jobs`` at a time.
A stage that must run takes a lock on its key first and looks in the cache again, so of two
``pipeline run`` processes on one vault each key runs once: the second restores the first's result.

Write order for a stage that ran: its outputs go into the object store (one batch, durable), then
one transaction records the cache row and its object references, then ``labvault.lock`` gets the
stage's entry; a crash at any point leaves no cache row pointing at missing or partial outputs.

Failures: a failed stage stops everything new from starting (the running ones finish) or, with
``keep_going``, only its dependents. Ctrl-C stops every stage's process group, removes the outputs
of the stages that did not finish, and re-raises (exit 130).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from labvault.errors import LabvaultError, ValidationError
from labvault.services.pipelines.executor import Executor, StageJob, StageOutcome
from labvault.services.pipelines.outputs import remove_outputs, restore_output, store_output
from labvault.services.pipelines.plan import Decision, Planner
from labvault.services.pipelines.select import StageReport
from labvault.services.pipelines.spec import Pipeline, Stage
from labvault.storage.locks import removable_lock, sweep_locks
from labvault.storage.meta.repos.gc_lock import key_lock

if TYPE_CHECKING:
    from labvault.services.pipelines.service import Pipelines

__all__ = ["Runner"]

_KEY_LOCK_WAIT_S = 24 * 3600.0  # a second run waits for the first to finish the same stage


class _Cancelled(Exception):
    pass


class Runner:
    def __init__(
        self,
        svc: Pipelines,
        pipeline: Pipeline,
        planner: Planner,
        executor: Executor,
        *,
        jobs: int,
        forced: set[str],
        keep_going: bool,
        say: Callable[[str], None],
    ) -> None:
        self.svc = svc
        self.pipeline = pipeline
        self.planner = planner
        self.executor = executor
        self.jobs = max(1, jobs)
        self.forced = forced
        self.keep_going = keep_going
        self.say = say
        from labvault.services.pipelines.local import LocalExecutor

        # Another executor reads deps from the object store, not from this folder.
        self.remote = not isinstance(executor, LocalExecutor)
        self._plan_lock = threading.Lock()
        self._track_lock = threading.Lock()
        self._cancel = threading.Event()
        self.running: set[str] = set()
        self.parent_id: str | None = None
        self._parent_thread: threading.Thread | None = None
        self._parent_error: LabvaultError | None = None

    # -- scheduling ---------------------------------------------------------------------------
    def run(self, selected: list[str]) -> list[StageReport]:
        chosen = set(selected)
        reports: dict[str, StageReport] = {}
        remaining = list(selected)
        futures: dict[Future[StageReport], str] = {}
        stopping = False
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="pipeline")
        try:
            while remaining or futures:
                if not stopping:
                    for name in list(remaining):
                        ups = [u for u in self.pipeline.upstream[name] if u in chosen]
                        bad = [u for u in ups if u in reports and reports[u].state in ("failed", "skipped")]
                        if bad:
                            reports[name] = StageReport(name, "skipped", [f"upstream stage {bad[0]} did not finish"])
                            remaining.remove(name)
                        elif all(u in reports for u in ups) and len(futures) < self.jobs:
                            remaining.remove(name)
                            with self._plan_lock:
                                self.running.add(name)
                            futures[pool.submit(self._stage, name)] = name
                if not futures:
                    break
                finished, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    name = futures.pop(fut)
                    report = fut.result()
                    reports[name] = report
                    if report.state == "failed" and not self.keep_going:
                        stopping = True
        except KeyboardInterrupt:
            self._cancel.set()
            self.executor.cancel_all()
            for fut in futures:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            unfinished = list(self.running)
            outs = [o for n in unfinished for o in self.pipeline.stages[n].outs]
            remove_outputs(self.svc.root, outs)
            self._finish_parent("killed", 130, "interrupted")
            raise
        pool.shutdown(wait=True)
        sweep_locks(self.svc.vault_dir / "locks" / "pipeline")  # those of killed runs; held ones stay
        for name in remaining:
            reports[name] = StageReport(name, "not started", ["the pipeline stopped after a failure"])
        failed = [r for r in reports.values() if r.state == "failed"]
        if self.parent_id is not None:
            fresh = {n: r.key for n, r in reports.items() if r.state == "up to date" and r.key}
            self.svc.record_up_to_date(self.parent_id, fresh)
            self._finish_parent(
                "failed" if failed else "finished", 1 if failed else 0, failed[0].error if failed else None
            )
        return [reports[n] for n in selected if n in reports]

    # -- one stage ----------------------------------------------------------------------------
    def _stage(self, name: str) -> StageReport:
        started = time.monotonic()
        try:
            report = self._decide_and_act(name)
        except _Cancelled:
            report = StageReport(name, "cancelled", ["interrupted"])
        except LabvaultError as err:
            report = StageReport(name, "failed", [], error=err.message)
        report.seconds = time.monotonic() - started
        if report.state != "cancelled":
            with self._plan_lock:
                self.running.discard(name)  # finished: Ctrl-C from now on leaves its outputs alone
        if report.state in ("ran", "restored"):
            self.say(f"{report.state:<9} {name} ({report.seconds:.1f}s)")
        elif report.state == "failed":
            self.say(f"failed    {name}: {report.error}")
        return report

    def _decide_and_act(self, name: str) -> StageReport:
        stage = self.pipeline.stages[name]
        with self._plan_lock:
            decision = self.planner.decide(name, force=name in self.forced)
        if decision.state in ("up to date", "frozen"):
            return StageReport(name, "up to date", decision.reasons, decision.key)
        if decision.key is None:
            raise ValidationError(f"stage {name}: " + "; ".join(decision.reasons))
        if decision.state == "restore" and decision.outs is not None:
            return self._restore(stage, decision, decision.outs)
        with self._track_lock:
            if self._parent_thread is None:
                self._start_parent()
        with self._key_lock(decision.key, name):
            if name not in self.forced and not stage.always_changed:
                cached = self.svc.inputs.cached_outs(decision.key)
                if cached is not None and set(cached) == set(stage.outs):
                    decision.reasons.append("another run computed it meanwhile")
                    return self._restore(stage, decision, cached)
            return self._execute(stage, decision)

    @contextlib.contextmanager
    def _key_lock(self, key: str, name: str) -> Iterator[None]:
        """One run of a stage key at a time: on this machine (a lock file), and with the metadata in
        PostgreSQL on every machine of the team (an advisory lock on the key), so the second waits and
        then restores what the first stored."""
        lock_dir = self.svc.vault_dir / "locks" / "pipeline"
        lock_dir.mkdir(parents=True, exist_ok=True)
        what = f"stage {name}'s key"
        with removable_lock(lock_dir / f"{key[7:]}.lock", timeout=_KEY_LOCK_WAIT_S, what=what):
            meta = self.svc.meta
            if meta.is_sqlite:
                yield
                return
            with key_lock(meta, key, timeout=_KEY_LOCK_WAIT_S, what=what):
                yield

    def _restore(self, stage: Stage, decision: Decision, outs: dict[str, tuple[str, str]]) -> StageReport:
        if self._cancel.is_set():
            raise _Cancelled
        for path, (digest, kind) in sorted(outs.items()):
            current = self.planner.hashes.digest(path)
            if current != digest:
                restore_output(
                    self.svc.objects, self.svc.root, self.svc.vault_dir, self.planner.hashes, path, digest, kind
                )
        self._record_lock(stage, decision, outs)
        run_id = self._track(stage, decision, outs, restored=True)
        with self._plan_lock:
            decision.outs = outs
        return StageReport(stage.name, "restored", decision.reasons, decision.key, run_id=run_id)

    def _execute(self, stage: Stage, decision: Decision) -> StageReport:
        key = decision.key
        if key is None:
            raise ValidationError(f"stage {stage.name}: its key is not known")
        if self._cancel.is_set():
            raise _Cancelled
        self.svc.inputs.prepare_data_deps(stage)
        remove_outputs(self.svc.root, stage.outs)
        for out in stage.outs:
            self.planner.hashes.forget(out)
        self.say(f"running   {stage.name}: {', '.join(decision.reasons)}")
        job = StageJob(
            name=stage.name,
            cmd=stage.cmd,
            wdir=stage.wdir,
            deps=self.svc.inputs.job_deps(stage, decision.deps, store=self.remote),
            outs=stage.outs,
            env=dict(self.svc.stage_env),
        )
        outcome: StageOutcome = self.executor.submit(job).result()
        log_rel = self.svc.write_log(stage.name, outcome.log)
        if self._cancel.is_set():
            raise _Cancelled
        if outcome.returncode != 0:
            why = f"signal {-outcome.returncode}" if outcome.returncode < 0 else f"exit code {outcome.returncode}"
            remove_outputs(self.svc.root, stage.outs)
            self._track(stage, decision, {}, restored=False, outcome=outcome, error=f"failed ({why})")
            return StageReport(
                stage.name,
                "failed",
                decision.reasons,
                decision.key,
                error=f"stage {stage.name} failed ({why}); log: {log_rel}",
                log=log_rel,
            )
        if outcome.missing_outs:
            missing = ", ".join(outcome.missing_outs)
            self._track(stage, decision, {}, restored=False, outcome=outcome, error=f"did not write {missing}")
            return StageReport(
                stage.name,
                "failed",
                decision.reasons,
                decision.key,
                error=f"stage {stage.name} did not write its declared output {missing}; log: {log_rel}",
                log=log_rel,
            )
        outs: dict[str, tuple[str, str]] = {}
        if outcome.outs:  # a remote executor stored them already: bring them here, verified
            for path, digest in outcome.outs.items():
                kind = "dir" if self.svc.inputs.is_tree(digest) else "file"
                if self.planner.hashes.digest(path) != digest:
                    restore_output(
                        self.svc.objects, self.svc.root, self.svc.vault_dir, self.planner.hashes, path, digest, kind
                    )
                outs[path] = (digest, kind)
        else:
            with self.svc.objects.batch():
                for path in stage.outs:
                    outs[path] = store_output(self.svc.objects, self.svc.root, self.svc.vault_dir, path)
        for path, (digest, _kind) in outs.items():
            self.planner.hashes.record(path, digest)  # the stage has ended: what was stored is what is there
        run_id = self._track(stage, decision, outs, restored=False, outcome=outcome)
        self.svc.record_cache(key, stage.name, outs, run_id)
        self._record_lock(stage, decision, outs)
        with self._plan_lock:
            decision.outs = outs
        return StageReport(stage.name, "ran", decision.reasons, decision.key, log=log_rel, run_id=run_id)

    def _record_lock(self, stage: Stage, decision: Decision, outs: dict[str, tuple[str, str]]) -> None:
        entry = {
            "cmd": stage.cmd,
            "deps": dict(sorted(decision.deps.items())),
            "env": self.planner.env_digest(stage),
            "key": decision.key,
            "outs": {p: outs[p][0] for p in sorted(outs)},
            "params": stage.params,
            "trees": sorted(p for p, (_d, k) in outs.items() if k == "dir"),
            "wdir": stage.wdir,
        }
        self.svc.update_lock_stage(stage.name, entry, new_outs=[p for p in outs if p not in self._locked_outs(stage)])

    def _locked_outs(self, stage: Stage) -> set[str]:
        entry = self.planner.lock.get(stage.name)
        return set(entry["outs"]) if entry else set()

    # -- tracking -----------------------------------------------------------------------------
    def _start_parent(self) -> None:
        """Record the pipeline run while the first stages run (capturing the environment takes a while)."""

        def start() -> None:
            try:
                self.parent_id = self.svc.start_pipeline_run()
            except LabvaultError as err:
                self._parent_error = err

        self._parent_thread = threading.Thread(target=start, name="pipeline-run", daemon=True)
        self._parent_thread.start()

    def _ensure_parent(self) -> str:
        if self._parent_thread is None:
            self._start_parent()
        if self._parent_thread is not None:
            self._parent_thread.join()
        if self.parent_id is None:
            raise self._parent_error or LabvaultError("the pipeline run was not recorded")
        return self.parent_id

    def _finish_parent(self, status: str, code: int, error: str | None) -> None:
        if self._parent_thread is not None:
            self._parent_thread.join()
        if self.parent_id is not None:
            self.svc.finish_run(self.parent_id, status=status, exit_code=code, error=error)

    def _track(
        self,
        stage: Stage,
        decision: Decision,
        outs: dict[str, tuple[str, str]],
        *,
        restored: bool,
        outcome: StageOutcome | None = None,
        error: str | None = None,
    ) -> str | None:
        with self._track_lock:
            parent = self._ensure_parent()
            return self.svc.record_stage_run(
                parent,
                stage,
                decision,
                outs,
                restored=restored,
                outcome=outcome,
                error=error,
                env=self.planner.env_digest(stage),
            )
