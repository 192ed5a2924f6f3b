"""The reversible JSON form of msgpack values used by ``zjobs send`` and ``zjobs listen``."""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zjobs.wire.codec import decode, encode
from zjobs.wire.jsonvalues import from_json, to_json


def through_json(value: Any) -> Any:
    return from_json(json.loads(json.dumps(to_json(value), allow_nan=False)))


@pytest.mark.parametrize(("value", "form"), [
    (None, None),
    (True, True),
    (-3, -3),
    (2.5, 2.5),
    ("text", "text"),
    (b"\x00\xff", {"$bytes": "AP8="}),
    (b"", {"$bytes": ""}),
    ([1, b"a"], [1, {"$bytes": "YQ=="}]),
    ({"a": b"a"}, {"a": {"$bytes": "YQ=="}}),
    ({1: "one", "two": 2}, {"$map": [[1, "one"], ["two", 2]]}),
    ({b"k": 1}, {"$map": [[{"$bytes": "aw=="}, 1]]}),
    ({"$bytes": "AP8="}, {"$map": [["$bytes", "AP8="]]}),  # a map that looks like a tag
    ({"$other": 1}, {"$other": 1}),  # unknown tags are plain maps
    (math.inf, {"$float": "inf"}),
    (-math.inf, {"$float": "-inf"}),
    (msgpack.ExtType(5, b"\x01"), {"$ext": [5, "AQ=="]}),
])
def test_documented_forms_and_back(value: Any, form: Any) -> None:
    assert to_json(value) == form
    assert through_json(value) == value


def test_nan() -> None:
    assert to_json(math.nan) == {"$float": "nan"}
    assert math.isnan(through_json(math.nan))


def test_tuple_keys_and_tuples() -> None:
    value = decode(encode({(1, 2): "pair"}))  # how msgpack gives an array key to Python
    assert through_json(value) == {(1, 2): "pair"}
    assert to_json((1, 2)) == [1, 2]


def test_timestamp_becomes_ext() -> None:
    stamp = msgpack.Timestamp(1, 0)
    assert to_json(stamp) == {"$ext": [-1, "AAAAAQ=="]}


@pytest.mark.parametrize(("form", "message"), [
    ({"$bytes": 3}, "expected a base64 string"),
    ({"$bytes": "***"}, "invalid base64"),
    ({"$float": "big"}, 'expected "nan", "inf" or "-inf"'),
    ({"$ext": [500, ""]}, "expected [code (-128..127)"),
    ({"$map": [[1]]}, "list of [key, value] pairs"),
    ({"$map": [[{"a": 1}, 1]]}, "unusable key"),
])
def test_malformed_tags_raise_value_error(form: Any, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        from_json(form)
    assert message in str(info.value)


def test_non_msgpack_value_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        to_json({1, 2})


ints = st.integers(-(2**63), 2**64 - 1)
msgpack_values = st.recursive(
    st.none() | st.booleans() | ints | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text() | ints | st.binary(), children, max_size=4),
    max_leaves=20,
)


@given(msgpack_values)
def test_every_msgpack_value_survives_json(value: Any) -> None:
    decoded = decode(encode(value))
    assert encode(through_json(decoded)) == encode(decoded)
