"""``billing.fastinit.dict_init``: the cheaper ``__init__`` of the rating's frozen dataclasses behaves
exactly like the one ``@dataclass`` generates (signature, defaults, equality, hash, replace, frozen)."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import InitVar, dataclass, field
from decimal import Decimal

import pytest

from billing.fastinit import dict_init
from billing.rating import LineKind, RatedLine, UsageRow, _Segment


@dataclass(frozen=True)
class _Plain:
    a: int
    b: str = "x"
    c: Decimal = Decimal("0.00")
    d: bool = False


@dict_init
@dataclass(frozen=True)
class _Fast:
    a: int
    b: str = "x"
    c: Decimal = Decimal("0.00")
    d: bool = False


def _fields(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


@pytest.mark.parametrize("args, kwargs", [((1,), {}), ((1, "y"), {}), ((1,), {"d": True}),
                                          ((), {"a": 2, "c": Decimal("1.5"), "b": "z"}),
                                          ((3, "q", Decimal("2"), True), {})])
def test_same_values_as_the_generated_init(args, kwargs):
    fast, plain = _Fast(*args, **kwargs), _Plain(*args, **kwargs)
    assert _fields(fast) == _fields(plain)
    assert [type(v) for v in _fields(fast).values()] == [type(v) for v in _fields(plain).values()]
    assert repr(fast).replace("_Fast", "_Plain") == repr(plain)


@pytest.mark.parametrize("cls, generated", [(_Fast, _Plain), (UsageRow, None), (RatedLine, None), (_Segment, None)])
def test_same_signature_as_the_generated_init(cls, generated):
    if generated is None:  # the same class without the decorator
        ns = {f.name: f.type for f in dataclasses.fields(cls)}
        generated = dataclass(frozen=True)(type(cls.__name__, (), {
            "__annotations__": ns,
            **{f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}}))
    assert str(inspect.signature(cls)) == str(inspect.signature(generated))


def test_missing_and_unknown_arguments_are_refused_like_the_generated_init():
    with pytest.raises(TypeError):
        _Fast()
    with pytest.raises(TypeError):
        _Fast(1, nope=2)
    with pytest.raises(TypeError):
        _Fast(1, "y", Decimal(0), False, "extra")
    with pytest.raises(TypeError):
        _Fast(1, a=1)


def test_still_frozen_equal_hashable_replaceable_and_picklable():
    row = UsageRow(0, "v1", "gpt-4o", billable=True, executions=3, cost=Decimal("0.10"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.executions = 4  # type: ignore[misc]
    same = UsageRow(segment=0, version="v1", model="gpt-4o", billable=True, executions=3, cost=Decimal("0.10"))
    assert row == same and hash(row) == hash(same)
    assert row != dataclasses.replace(row, executions=4)
    assert dataclasses.replace(row, credit_funded=True).credit_funded is True
    assert dataclasses.replace(row, credit_funded=True).executions == 3
    assert pickle.loads(pickle.dumps(row)) == row
    line = RatedLine(LineKind.usage, "d", Decimal(1), Decimal("0.5"), Decimal("0.50"), key="k")
    assert (line.model, line.version, line.executions, line.cost) == (None, None, 0, Decimal("0.00"))


def test_defaults_are_the_declared_ones_for_every_decorated_rating_class():
    row = UsageRow(1, "v", "m")
    assert _fields(row) == {f.name: (f.default if f.default is not dataclasses.MISSING else getattr(row, f.name))
                            for f in dataclasses.fields(UsageRow)}


def test_refuses_what_it_does_not_reproduce():
    with pytest.raises(TypeError, match="frozen"):
        dict_init(dataclass(type("NotFrozen", (), {"__annotations__": {"a": int}})))
    with pytest.raises(TypeError, match="plain fields"):
        @dict_init
        @dataclass(frozen=True)
        class _Factory:
            a: list = field(default_factory=list)
    with pytest.raises(TypeError, match="plain fields"):
        @dict_init
        @dataclass(frozen=True)
        class _KwOnly:
            a: int = field(kw_only=True)
    with pytest.raises(TypeError, match="__post_init__"):
        @dict_init
        @dataclass(frozen=True)
        class _Post:
            a: int

            def __post_init__(self):
                pass
    with pytest.raises(TypeError, match="InitVar"):
        @dict_init
        @dataclass(frozen=True)
        class _Init:
            a: int
            b: InitVar[int] = 0
