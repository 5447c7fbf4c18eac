"""The reliability suite: SIGKILLed writers and flipped bytes, with counts printed at the end.

By default each fault runs a reduced number of trials (the whole suite has to stay small);
``LABVAULT_TEST_FULL=1`` runs the full counts of issue 9 item 13 (at least 25 per operation).
The tallies go to the terminal summary, with or without ``-s``, so a run's counts can be quoted.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict

import pytest

from tests.e2e.conftest import cli as cli  # the real executable, as in tests/e2e

FULL = os.environ.get("LABVAULT_TEST_FULL") == "1"
KILL_TRIALS = 25 if FULL else 6
FLIP_TRIALS = 25 if FULL else 6

Tally = defaultdict[str, Counter[str]]

_TALLY = pytest.StashKey[Tally]()


@pytest.fixture(scope="session")
def tally(pytestconfig: pytest.Config) -> Tally:
    """``tally["object put"]["kills"] += 1``: counts shown in the terminal summary."""
    return pytestconfig.stash.setdefault(_TALLY, defaultdict(Counter))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    counts = config.stash.get(_TALLY, None)
    if not counts:
        return
    terminalreporter.section(f"fault injection ({'full' if FULL else 'reduced'} counts)")
    for name in sorted(n for n in counts if counts[n]):
        fields = ", ".join(f"{key} {value}" for key, value in counts[name].items())
        terminalreporter.write_line(f"{name}: {fields}")
