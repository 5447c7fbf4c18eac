"""What the web UI's heavy queries return, on SQLite and PostgreSQL: a metric chart's envelope (each
step range's minimum and maximum) and a page of runs sorted by a metric or a param.

No browser: these are the answers the pages draw (tests/ui/test_runs_pages.py checks the drawing).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx

from labvault.vault import Vault


def _run(vault: Vault, project: Path, name: str) -> str:
    return vault.runs.create(project="q", name=name, cwd=project, capture=False).id


def test_the_envelope_keeps_each_step_ranges_minimum_and_maximum(any_vault: Vault, project: Path) -> None:
    run_id = _run(any_vault, project, "long")
    steps = range(5_000)
    values = {s: math.sin(s / 37) * (1 + s % 7) for s in steps}
    values[1234], values[4321] = 50.0, -50.0  # spikes a mean would hide
    points: list[tuple[str, object, int]] = [("loss", values[s], s) for s in steps]
    points += [("loss", math.nan, 5_000), ("loss", math.inf, 5_001)]  # never drawn
    points += [("short", float(s), s) for s in range(10)] + [("short", math.nan, 10)]
    any_vault.runs.log_metrics(run_id, points)

    envelope = any_vault.runs.history_envelope(run_id, buckets=50)

    assert envelope["short"] == [(s, float(s)) for s in range(10)] + [(10, None)]  # short: as it is
    loss = envelope["loss"]
    assert [s for s, _ in loss] == sorted(s for s, _ in loss)
    assert len(loss) <= 2 * 50
    assert max(v for _, v in loss if v is not None) == 50.0
    assert min(v for _, v in loss if v is not None) == -50.0
    # Ranges of equal width over the steps 0..5001: each range's minimum and maximum are both there.
    width = -(-5_002 // 50)
    for first in range(0, 5_000, width):
        inside = [values[s] for s in steps if first <= s < first + width]
        drawn = [v for s, v in loss if first <= s < first + width]
        assert sorted(drawn) == sorted({min(inside), max(inside)}), first


def test_the_envelope_of_steps_far_apart(any_vault: Vault, project: Path) -> None:
    # Steps up to 2**62: the step range times the number of ranges does not fit in 64 bits
    # (PostgreSQL refused the query: bigint out of range).
    run_id = _run(any_vault, project, "far")
    any_vault.runs.log_metrics(run_id, [("m", float(i), i * 2**54) for i in range(300)])
    envelope = any_vault.runs.history_envelope(run_id, buckets=100)
    values = [v for _, v in envelope["m"]]
    assert min(values) == 0.0
    assert max(values) == 299.0
    assert len(values) <= 200


def test_a_page_sorted_by_a_metric_or_a_param(any_vault: Vault, project: Path) -> None:
    metric: dict[str, float | None] = {}
    param: dict[str, object] = {}
    for i in range(40):
        run_id = _run(any_vault, project, f"r{i:02d}")
        value = None if i % 9 == 0 else math.nan if i % 11 == 0 else (i * 7919) % 23 / 4
        if value is not None:
            any_vault.runs.log_metrics(run_id, [("auc", value, 0)])
        metric[run_id] = value if value is not None and math.isfinite(value) else None
        if i % 5:  # numbers and words: numbers first, by value; runs without it last
            param[run_id] = (i * 31) % 17 if i % 4 else f"w{(i * 13) % 10}"
            any_vault.runs.log_params(run_id, {"depth": param[run_id]})

    with_auc = sorted((v, k) for k, v in metric.items() if v is not None)
    without = sorted(k for k, v in metric.items() if v is None)
    ascending = [k for _, k in with_auc] + without
    descending = [k for _, k in sorted(with_auc, key=lambda p: (-p[0], p[1]))] + without
    numbers = sorted((float(v), k) for k, v in param.items() if isinstance(v, int))
    words = sorted((str(v), k) for k, v in param.items() if isinstance(v, str))
    by_param = [k for _, k in numbers] + [k for _, k in words] + sorted(k for k in metric if k not in param)

    def pages(sort: str) -> list[str]:
        out: list[str] = []
        for offset in range(0, 40, 7):
            out += [r.id for r in any_vault.runs.list(sort=sort, limit=7, offset=offset)]
        return out

    assert pages("metrics.auc") == ascending
    assert pages("-metrics.auc") == descending
    assert pages("params.depth") == by_param
    assert [r.id for r in any_vault.runs.list(sort="metrics.auc")] == ascending  # no limit: the same order


def test_a_running_runs_chart_shows_new_points_and_a_finished_runs_stays_right(project: Path) -> None:
    # The server keeps a finished run's envelope; a running run's is read again on every page.
    from tests.server.conftest import lv, start_server, stop_server

    lv(project, "init")
    with Vault.open(project) as vault:
        run_id = _run(vault, project, "live")
        vault.runs.log_metrics(run_id, [("loss", 1.0 / (1 + s), s) for s in range(10)])
    proc, url = start_server(project, "--no-auth")
    try:

        def drawn() -> int:
            page = httpx.get(f"{url}/runs/{run_id}", timeout=30)
            page.raise_for_status()
            data = page.text.split('<script type="application/json" id="chart-data">', 1)[1].split("</script>")[0]
            return len(json.loads(data)[0]["series"][0]["points"])

        assert drawn() == 10
        with Vault.open(project) as vault:
            vault.runs.log_metrics(run_id, [("loss", 0.01, s) for s in range(10, 15)])
        assert drawn() == 15
        with Vault.open(project) as vault:
            vault.runs.finish(run_id)
        assert drawn() == 15
        assert drawn() == 15
    finally:
        log = stop_server(proc)
    assert "Traceback" not in log, log
