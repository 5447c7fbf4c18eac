"""What a run records as param values, metric values and steps: refused with the key named, or stored."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest

import labvault as lv
from labvault.errors import ValidationError
from labvault.services.tracking.values import encode_param, metric_step, metric_value
from labvault.vault import Vault


@pytest.fixture(autouse=True)
def _no_open_runs():
    from labvault import fluent

    yield
    while fluent._stack:
        fluent._stack[-1].end("killed")
    for v in fluent._vaults.values():
        v.close()
    fluent._vaults.clear()


class Scalar:
    """A stand-in for a numpy integer: only ``__index__``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __index__(self) -> int:
        return self.n


class Real:
    """A stand-in for numpy.float32: only ``__float__``."""

    def __float__(self) -> float:
        return 0.25


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda run: run.log_metric("x", 10**400), "metric 'x' is 1000"),  # was a raw OverflowError
        (lambda run: run.log_metric("x", Fraction(10**400)), "metric 'x' is Fraction"),
        (lambda run: run.log_metric("x", 10**5000), "metric 'x' is"),
        (lambda run: run.log_metric("x", 1.0, step=2**70), "metric 'x': step 1180591620717411303424 is out of range"),
        (lambda run: run.log_metric("x", 1.0, step=2**63), "out of range"),  # was StorageError (exit 7)
        (lambda run: run.log_metric("x", 1.0, step=-1), "out of range"),
        (lambda run: run.log_metric("x", 1.0, step=1.5), "step must be an integer"),
        (lambda run: run.log_metric("x", 1.0, step=True), "step must be an integer"),
        (lambda run: run.log_metrics({"a": 1.0, "b": 2.0}, step=2**64), "metric 'a'"),
        (lambda run: run.log_metric("x", "1.0"), "metric 'x' must be a number"),
        (lambda run: run.log_metric("x", [1.0]), "metric 'x' must be a number"),
        (lambda run: run.log_param("o", object()), "param 'o' cannot be a object"),  # was stored as its repr
        (lambda run: run.log_param("s", {1, 2}), "param 's' cannot be a set"),
        (lambda run: run.log_param("b", b"raw"), "param 'b' cannot be a bytes"),
        (lambda run: run.log_param("d", {1: "one"}), "param 'd': dict keys must be strings"),
        (lambda run: run.log_param("l", [1, object()]), "param 'l' cannot be a object"),
        (lambda run: run.log_param("big", 10**5000), "param 'big' is an integer too long"),
        (lambda run: run.log_param("n", _nested(150)), "param 'n' is nested more than 100"),
    ],
)
def test_bad_values_are_refused_naming_the_key(vault: Vault, call, message: str) -> None:
    with lv.start_run() as run:
        with pytest.raises(ValidationError) as err:
            call(run)
        assert message in err.value.message
        assert err.value.exit_code == 2
        run.log_metric("x", 0.5)  # the run is still usable: the refused step did not move the counter
    stored = vault.runs.get(run.id)
    assert stored.params == {}
    assert [p.step for p in vault.runs.history(run.id)["x"]] == [0]


def _nested(depth: int) -> list:
    out: list = []
    for _ in range(depth):
        out = [out]
    return out


def test_numbers_of_other_types_are_accepted(vault: Vault) -> None:
    with lv.start_run() as run:
        run.log_metric("index", Scalar(3), step=Scalar(7))
        run.log_metric("real", Real())
        run.log_metric("dec", Decimal("0.5"))
        run.log_metric("frac", Fraction(1, 4))
        run.log_metric("nan", float("nan"))
        run.log_metric("inf", -math.inf)
        run.log_metric("top", 1.0, step=2**63 - 1)
        run.log_params({"p_index": Scalar(5), "p_real": Real()})
    history = vault.runs.history(run.id)
    assert (history["index"][0].step, history["index"][0].value) == (7, 3.0)
    assert history["real"][0].value == 0.25
    assert history["dec"][0].value == 0.5
    assert math.isnan(history["nan"][0].value)
    assert history["top"][0].step == 2**63 - 1
    assert vault.runs.get(run.id).params == {"p_index": 5, "p_real": 0.25}


def test_lists_and_dicts_are_stored_as_canonical_json(vault: Vault) -> None:
    with lv.start_run() as run:
        run.log_params(
            {"layers": [64, 32, None, True], "opt": {"name": "adam", "betas": (0.9, 0.999)}, "odd": [float("nan")]}
        )
        run.log_param("opt", {"betas": [0.9, 0.999], "name": "adam"})  # the same value: not a conflict
    params = vault.runs.get(run.id).params
    assert params["layers"] == [64, 32, None, True]
    assert params["opt"] == {"betas": [0.9, 0.999], "name": "adam"}
    assert params["odd"] == ["NaN"]
    assert encode_param("opt", {"name": "adam", "betas": [0.9]}) == (
        '{"betas":[0.9],"name":"adam"}',
        '{"betas":[0.9],"name":"adam"}',
    )
    assert vault.runs.list(filter="params.layers = '[64,32,null,true]'")[0].id == run.id


def test_scalars_are_stored_as_before() -> None:
    assert encode_param("a", 4) == ("4", "4")
    assert encode_param("a", "4") == ('"4"', "4")
    assert encode_param("a", 2.0) == ("2.0", "2")
    assert encode_param("a", None) == ("null", "null")
    assert encode_param("a", True) == ("true", "true")
    assert encode_param("a", float("nan")) == ('"nan"', "nan")
    assert metric_value("m", 3) == 3.0
    assert metric_step("m", 0) == 0


def test_seeds_and_limits_beyond_what_is_stored_are_refused(vault: Vault) -> None:
    with pytest.raises(ValidationError, match="invalid seed"):
        lv.start_run(seed=2**32)
    with pytest.raises(ValidationError, match="invalid seed"):
        lv.start_run(seed=10**20)  # was an OverflowError from the database
    assert vault.runs.list() == []  # refused before the run was created
    with lv.start_run(seed=2**32 - 1) as run:
        pass
    assert vault.runs.get(run.id).seed == 2**32 - 1
    with pytest.raises(ValidationError, match="invalid limit"):
        vault.runs.list(limit=2**63)
    with pytest.raises(ValidationError, match="invalid limit"):
        vault.registry.audit.events(limit=10**20)
    assert len(vault.runs.list(limit=2**63 - 1)) == 1


@pytest.mark.parametrize("value", ["a\x00b", "a\udcffb", ["ok", "a\x00"], {"k\x00": 1}, {"k": ["\udcfe"]}])
def test_text_no_database_can_hold_is_refused(any_vault: Vault, value: object) -> None:
    # NUL: PostgreSQL refuses it (a storage error, exit 7); a lone surrogate (an undecodable byte
    # from a command line) failed to encode (a traceback).
    run = any_vault.runs.create(name="r", project="p", capture=False)
    with pytest.raises(ValidationError, match="param 'p'"):
        any_vault.runs.log_params(run.id, {"p": value})
    if isinstance(value, str):  # a tag is the str() of its value: a list's repr escapes what it holds
        with pytest.raises(ValidationError, match="tag 't'"):
            any_vault.runs.set_tags(run.id, {"t": value})
    with pytest.raises(ValidationError, match="run name"):
        any_vault.runs.create(name="n\udcff", project="p", capture=False)
    assert any_vault.runs.get(run.id).params == {}
