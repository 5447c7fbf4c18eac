"""The writer thread of single-point log requests (services/tracking/point_queue.py): requests committed
together are each answered by their own token and run-state check, and a database error fails every
request of its commit and stores none of them."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from labvault.entities.access import ApiToken
from labvault.errors import Conflict, NotAllowed, NotFound, StorageError
from labvault.services.access import Access
from labvault.services.tracking import point_queue
from labvault.services.tracking.batches import GatedPoints
from labvault.services.tracking.point_queue import PointQueue
from labvault.vault import Vault


def _gated(vault: Vault, run_id: str, text: str, step: int) -> GatedPoints:
    token_id, secret = Access.split_token(text)

    def authorize(found: tuple[ApiToken, str, str] | None) -> None:
        Access.require(Access.verify_token(found, secret), "writer")

    return vault.runs.gate_points(run_id, [("loss", 0.5, step)], token_id=token_id, authorize=authorize)


def _run(vault: Vault) -> str:
    return vault.runs.create(
        project=None,
        name="p",
        parent_id=None,
        inputs=[],
        seed=None,
        tags={},
        command=["p"],
        cwd=vault.root,
        capture=False,
    ).id


def test_each_request_of_a_commit_gets_its_own_answer(any_vault: Vault) -> None:
    _, writer = any_vault.access.create_token("w", role="writer")
    _, reader = any_vault.access.create_token("r", role="reader")
    running, finished = _run(any_vault), _run(any_vault)
    any_vault.runs.finish(finished, status="finished", exit_code=0, error=None)
    points = PointQueue(any_vault.runs)
    # Held back until all are queued, so that they share one commit.
    jobs: list[tuple[GatedPoints, Future[Any]]] = []
    for n, (run, text) in enumerate([(running, writer), (finished, writer), (running, reader), ("0" * 12, writer)]):
        jobs.append((_gated(any_vault, run, text, n), Future()))
    jobs.append((_gated(any_vault, running, writer, 9), Future()))
    point_queue._commit(any_vault.runs._appender().append_all, jobs)
    outcomes = [f.exception() or f.result() for _, f in jobs]
    assert outcomes[0] == {"params": 0, "tags": 0, "metrics": 1}
    assert isinstance(outcomes[1], Conflict)
    assert isinstance(outcomes[2], NotAllowed)
    assert isinstance(outcomes[3], NotFound)
    assert outcomes[4] == outcomes[0]
    assert [p.step for p in any_vault.runs.history(running)["loss"]] == [0, 9]
    # Through the thread as well.
    assert points.submit(_gated(any_vault, running, writer, 10)).result(timeout=30)["metrics"] == 1
    points.close()
    assert [p.step for p in any_vault.runs.history(running)["loss"]] == [0, 9, 10]


def test_a_database_error_fails_the_whole_commit(vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    _, writer = vault.access.create_token("w", role="writer")
    run = _run(vault)
    appender = vault.runs._appender()
    jobs: list[tuple[GatedPoints, Future[Any]]] = [(_gated(vault, run, writer, n), Future()) for n in range(3)]
    # The points are inserted, then the second statement fails: the whole commit is rolled back.
    monkeypatch.setattr(appender, "_latest_sql", "INSERT INTO no_such_table VALUES (1)")
    point_queue._commit(appender.append_all, jobs)
    assert all(isinstance(f.exception(), StorageError) for _, f in jobs)
    assert vault.runs.history(run) == {}
