"""One encoding of NaN and infinities for every JSON labvault writes."""

from __future__ import annotations

import json
import math

from labvault.entities import json_safe
from labvault.services.audit import canonical_json


def test_non_finite_numbers_become_the_convention_strings_at_any_depth() -> None:
    doc = {"a": math.nan, 1: [math.inf, (-math.inf, 0.5)], "n": None, "i": 3, "s": "NaN"}
    assert json_safe(doc) == {"a": "NaN", "1": ["Infinity", ["-Infinity", 0.5]], "n": None, "i": 3, "s": "NaN"}
    assert json_safe(float("nan")) == "NaN"
    assert json_safe(2.5) == 2.5


def test_the_audit_chain_and_command_output_encode_alike() -> None:
    doc = {"auc": math.nan, "loss": [math.inf, -math.inf]}
    assert json.loads(canonical_json(doc)) == json_safe(doc)
    assert canonical_json(doc) == '{"auc":"NaN","loss":["Infinity","-Infinity"]}'
