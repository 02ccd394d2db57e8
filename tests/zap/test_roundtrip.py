"""Every schema type survives encode/decode; the wire order is the declaration order."""

from __future__ import annotations

import enum
from types import ModuleType
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAX_DEPTH = 3


def strategy(info: mi.Type, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for any type a generated module can contain, read from msgspec's type info."""
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.IntType):
        upper = 2**64 - 1 if info.le is None else info.le  # UInt64: msgpack's own limit
        return st.integers(min_value=info.ge, max_value=upper)
    if isinstance(info, mi.FloatType):
        return st.floats(allow_nan=False)
    if isinstance(info, mi.StrType):
        return st.text(max_size=20)
    if isinstance(info, mi.BytesType):
        return st.binary(max_size=20)
    if isinstance(info, mi.EnumType):
        return st.sampled_from(list(info.cls))
    if isinstance(info, mi.ListType):
        if depth >= MAX_DEPTH:  # recursive types (Tree, Shape.many) end here
            return st.builds(list)
        return st.lists(strategy(info.item_type, depth + 1), max_size=3)
    if isinstance(info, mi.UnionType):
        options = info.types if depth < MAX_DEPTH else info.types[:2]
        return st.one_of([strategy(t, depth + 1) for t in options])
    if isinstance(info, mi.StructType):
        fields = {f.name: strategy(f.type, depth + 1) for f in info.fields}
        return st.builds(info.cls, **fields)
    raise AssertionError(f"no strategy for {info!r}")


def everything_strategy(kitchen: ModuleType) -> st.SearchStrategy[Any]:
    return strategy(mi.type_info(kitchen.Everything))


@pytest.fixture(scope="module")
def values(kitchen: ModuleType) -> st.SearchStrategy[Any]:
    return everything_strategy(kitchen)


def test_every_primitive_is_covered(kitchen: ModuleType) -> None:
    info = mi.type_info(kitchen.Everything)
    assert isinstance(info, mi.StructType)
    kinds = {type(f.type).__name__ for f in info.fields}
    assert {
        "BoolType",
        "IntType",
        "FloatType",
        "StrType",
        "BytesType",
        "EnumType",
        "StructType",
        "ListType",
        "UnionType",
    } <= kinds


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(data=st.data())
def test_everything_round_trips(kitchen: ModuleType, data: st.DataObject) -> None:
    value = data.draw(everything_strategy(kitchen))
    wire = msgspec.msgpack.encode(value)
    assert msgspec.msgpack.decode(wire, type=kitchen.Everything) == value
    # params/result structs carry the same value unchanged
    params = msgspec.msgpack.encode(kitchen.RoundTripParams(value))
    assert msgspec.msgpack.decode(params, type=kitchen.RoundTripParams).value == value


def test_wire_is_positional_in_declaration_order(kitchen: ModuleType) -> None:
    point = kitchen.Point(1.5, 2.0)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(point)) == [1.5, 2.0]
    shape = kitchen.ShapeLabel("hi")  # variant #1 of union Shape
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(shape)) == [1, "hi"]
    assert isinstance(kitchen.Color.blue, enum.IntEnum) and kitchen.Color.blue == 2


def test_appended_fields_are_compatible_both_ways(kitchen: ModuleType) -> None:
    # An older peer sends fewer elements: the rest take their zero defaults.
    old = msgspec.msgpack.encode([True, 5])
    value = msgspec.msgpack.decode(old, type=kitchen.Everything)
    assert (value.flag, value.i8, value.text, value.points) == (True, 5, "", [])
    # A newer peer sends more elements: the extras are ignored.
    newer = msgspec.msgpack.encode([3.0, 4.0, "appended later"])
    assert msgspec.msgpack.decode(newer, type=kitchen.Point) == kitchen.Point(3.0, 4.0)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("i8", 128),
        ("i8", -129),
        ("u8", 256),
        ("u8", -1),
        ("u16", 2**16),
        ("i32", 2**31),
        ("u32", -1),
        ("u64", -1),
        ("i64", 2**63),
    ],
)
def test_integer_bounds_are_enforced_on_decode(kitchen: ModuleType, field: str, bad: int) -> None:
    good = kitchen.Everything()
    raw = msgspec.to_builtins(good)
    names = [f.name for f in msgspec.structs.fields(kitchen.Everything)]
    raw[names.index(field)] = bad
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode(raw), type=kitchen.Everything)


def test_unknown_enum_value_is_rejected(kitchen: ModuleType) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode(7), type=kitchen.Color)


def test_defaults_are_zero_values(kitchen: ModuleType) -> None:
    value = kitchen.Everything()
    assert value.color is kitchen.Color.red
    assert value.shape == kitchen.ShapePoint(kitchen.Point(0.0, 0.0))
    assert value.tree == kitchen.Tree("", [])
