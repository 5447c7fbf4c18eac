"""The points the run and compare pages draw: each metric's envelope, kept for finished runs.

A finished run never changes (storage rule 4: a finished run is never overwritten, and only failed or
killed runs can be resumed), so its envelope is computed when it ends and stored in the vault
(services/tracking/envelopes.py): the first view reads that. A server process also keeps the envelopes
it served: the run page opened again, or a comparison that includes the run, draws without a query. The cache is
bounded by points (about 30 bytes each), least recently used first out; a running, failed or killed
run is read every time. Each server process has its own (``install`` puts one on the app).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from fastapi import Request

from labvault.entities import Run
from labvault.server.deps import Caller
from labvault.services.tracking.envelopes import ENVELOPE_BUCKETS

__all__ = ["CHART_BUCKETS", "Envelopes", "envelope_of"]

# A longer history is drawn as each of this many step ranges' minimum and maximum; the count stored
# when a run ends, so that a finished run's first view reads its stored envelope.
CHART_BUCKETS = ENVELOPE_BUCKETS
Envelope = dict[str, list[tuple[int, float | None]]]


class Envelopes:
    """Finished runs' envelopes, up to ``max_points`` points in all."""

    def __init__(self, *, max_points: int = 2_000_000) -> None:
        self.max_points = max_points
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[Envelope, int]] = OrderedDict()
        self._points = 0

    def get(self, run_id: str) -> Envelope | None:
        with self._lock:
            found = self._kept.get(run_id)
            if found is None:
                return None
            self._kept.move_to_end(run_id)
            return found[0]

    def put(self, run_id: str, envelope: Envelope) -> None:
        size = sum(len(points) for points in envelope.values()) + 1
        if size > self.max_points:
            return
        with self._lock:
            old = self._kept.pop(run_id, None)
            if old is not None:
                self._points -= old[1]
            self._kept[run_id] = (envelope, size)
            self._points += size
            while self._points > self.max_points:
                _, (_, dropped) = self._kept.popitem(last=False)
                self._points -= dropped


def envelope_of(request: Request, who: Caller, run: Run) -> Envelope:
    """``run``'s metric envelope (``vault.runs.history_envelope``: stored when it finished), from the
    app's cache when it finished."""
    cache: Envelopes | None = getattr(request.app.state, "ui_envelopes", None)
    key = f"{run.id}/{CHART_BUCKETS}"
    if cache is not None and run.status == "finished":
        found = cache.get(key)
        if found is not None:
            return found
    envelope = who.vault.runs.history_envelope(run.id, buckets=CHART_BUCKETS)
    if cache is not None and run.status == "finished":
        cache.put(key, envelope)
    return envelope
