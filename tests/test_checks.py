"""The validation kit: each check accepts exactly its kind of value and names what is wrong."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from l2o import checks
from l2o.errors import L2OError


@pytest.mark.parametrize("value", [2.5, 2.0, "8", True, None, [1]])
def test_integer_wants_an_int(value):
    with pytest.raises(L2OError, match="n must be an integer"):
        checks.integer("n", value)


def test_integer_bounds():
    assert checks.integer("n", 3, 1, 5) == 3
    with pytest.raises(L2OError, match="n must be >= 1, got 0"):
        checks.integer("n", 0, 1)
    with pytest.raises(L2OError, match="n must be <= 5, got 6"):
        checks.integer("n", 6, 1, 5)
    with pytest.raises(L2OError, match="<= 1000000000"):
        checks.integer("n", 10**30)  # a count beyond any run


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**400])
def test_number_is_finite(value):
    with pytest.raises(L2OError, match="x must be a finite number"):
        checks.number("x", value)


@pytest.mark.parametrize("value", [True, "0.1", None])
def test_number_wants_a_number(value):
    with pytest.raises(L2OError, match="x must be a number"):
        checks.number("x", value)


def test_number_bounds_and_conversion():
    assert checks.number("x", 3) == 3.0 and isinstance(checks.number("x", 3), float)
    with pytest.raises(L2OError, match="x must be > 0, got 0"):
        checks.number("x", 0, 0, low_open=True)
    assert checks.number("x", 0, 0) == 0.0


def test_boolean_text_and_names():
    assert checks.boolean("b", False) is False
    with pytest.raises(L2OError, match="true or false"):
        checks.boolean("b", 1)
    with pytest.raises(L2OError, match="one of a, b"):
        checks.text("t", "c", ("a", "b"))
    with pytest.raises(L2OError, match="non-empty string"):
        checks.text("t", "")
    assert checks.names("refs", "a, b", ("a", "b")) == ("a", "b")  # a string is a list
    assert checks.names("refs", ["b"], ("a", "b")) == ("b",)
    with pytest.raises(L2OError, match="unknown refs 'c'"):
        checks.names("refs", "a,c", ("a", "b"))


def test_threads_and_memory():
    assert checks.threads("t", 1) == 1
    with pytest.raises(L2OError, match="t must be <="):
        checks.threads("t", checks.max_threads() + 1)
    checks.memory("small", 1024)
    with pytest.raises(L2OError, match=r"needs about .* GiB, more than this machine's"):
        checks.memory("huge", 1e18)


def test_fields_follow_the_annotations():
    @dataclass(frozen=True)
    class Config:
        count: int = 1
        rate: float = 0.5
        flag: bool = False
        name: str = "x"

        def __post_init__(self) -> None:
            checks.fields(self, {"count": (1, 10)})

    assert Config(rate=1).rate == 1.0 and isinstance(Config(rate=1).rate, float)
    for bad, message in [
        ({"count": 2.5}, "count must be an integer"),
        ({"count": 11}, "count must be <= 10"),
        ({"rate": math.inf}, "rate must be a finite number"),
        ({"flag": "yes"}, "flag must be true or false"),
        ({"name": 3}, "name must be a non-empty string"),
    ]:
        with pytest.raises(L2OError, match=message):
            Config(**bad)
