"""Prometheus metrics of one server process, in the text exposition format at ``/metrics``.

Counted in the process (each worker has its own; Prometheus scrapes each, or sums them): requests by
method, route and status, and their durations.
"""

from __future__ import annotations

import threading
from collections import defaultdict

__all__ = ["Metrics"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets = [0] * (len(_BUCKETS) + 1)
        self._sum = 0.0
        self._count = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            self._count += 1
            self._sum += seconds
            for i, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    self._buckets[i] += 1
            self._buckets[-1] += 1

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP labvault_http_requests_total Requests served, by method, route and status.",
                "# TYPE labvault_http_requests_total counter",
            ]
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(f'labvault_http_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}')
            lines += [
                "# HELP labvault_http_request_seconds Time to answer a request.",
                "# TYPE labvault_http_request_seconds histogram",
            ]
            for bound, n in zip(_BUCKETS, self._buckets, strict=False):
                lines.append(f'labvault_http_request_seconds_bucket{{le="{bound}"}} {n}')
            lines.append(f'labvault_http_request_seconds_bucket{{le="+Inf"}} {self._buckets[-1]}')
            lines.append(f"labvault_http_request_seconds_sum {self._sum}")
            lines.append(f"labvault_http_request_seconds_count {self._count}")
        return "\n".join(lines) + "\n"
