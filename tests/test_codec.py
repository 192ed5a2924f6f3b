"""zjobs.wire.codec: msgpack settings, decode errors, canonical bytes."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from zjobs.errors import EncodeError, ProtocolError, ZJobsError
from zjobs.wire.codec import FrozenMap, canonical, decode, decode_header, encode


def test_str_is_msgpack_str_and_bytes_is_bin() -> None:
    assert encode("ab") == b"\xa2ab"
    assert encode(b"ab") == b"\xc4\x02ab"


def test_str_and_bytes_keep_their_type_on_decode() -> None:
    value = {"s": "x", "b": b"x", "n": None, "l": [1, 2.5, True]}
    assert decode(encode(value)) == value
    assert type(decode(encode(b"x"))) is bytes
    assert type(decode(encode("x"))) is str


def test_decode_accepts_memoryview() -> None:
    assert decode(memoryview(encode([1, "a"]))) == [1, "a"]


@pytest.mark.parametrize("value", [{1, 2}, object(), 2**70, {"deep": [{1: {3}}]}])
def test_encode_unencodable_raises_encode_error_from_the_original(value: Any) -> None:
    with pytest.raises(EncodeError) as info:
        encode(value)
    assert isinstance(info.value, ZJobsError)
    assert isinstance(info.value.__cause__, TypeError | ValueError | OverflowError)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing
        b"\xc1",  # the one byte msgpack never uses
        b"\x01\x02",  # trailing bytes after one value
        b"\xa1\xff",  # str with invalid UTF-8
        b"\x92\x01",  # truncated array
    ],
)
def test_decode_rejects_anything_but_one_valid_value(data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert info.value.__cause__ is not None
    with pytest.raises(ProtocolError):
        decode_header(data)


def test_decode_allows_map_keys_of_any_type() -> None:
    data = msgpack.packb({1: "int", b"b": "bin", 2.5: "float", None: "nil"}, use_bin_type=True)
    assert decode(data) == {1: "int", b"b": "bin", 2.5: "float", None: "nil"}


def test_decode_allows_array_map_keys() -> None:
    # PROTOCOL.md: processors decode request bodies allowing map keys of any type, arrays too.
    data = msgpack.packb({(1, 2): "pair", "x": [1, [2]]}, use_bin_type=True)
    value = decode(data)
    assert value == {(1, 2): "pair", "x": [1, [2]]}
    assert type(value["x"]) is list
    nested = msgpack.packb({((1, (2, 3)), 4): {"k": [5]}}, use_bin_type=True)
    assert decode(nested) == {((1, (2, 3)), 4): {"k": [5]}}
    assert decode_header(nested) == {((1, (2, 3)), 4): {"k": [5]}}


def test_decode_header_keeps_arrays_as_lists() -> None:
    # A meta {"trace": [1, 2]} must come back equal, not as {"trace": (1, 2)}.
    header = decode_header(encode({"v": 1, "meta": {"trace": [1, [2, 3]]}}))
    assert header == {"v": 1, "meta": {"trace": [1, [2, 3]]}}
    assert type(header["meta"]["trace"]) is list


def test_canonical_map_key_order_does_not_matter() -> None:
    a = {"a": 1, "b": {"x": [1, 2], "y": None}, 3: "three"}
    b = {3: "three", "b": {"y": None, "x": [1, 2]}, "a": 1}
    assert encode(a) != encode(b)
    assert canonical(a) == canonical(b)
    assert decode(canonical(a)) == a


def test_canonical_nested_inside_arrays() -> None:
    assert canonical([{"b": 1, "a": 2}]) == canonical([{"a": 2, "b": 1}])
    assert canonical(({"b": 1, "a": 2},)) == canonical([{"a": 2, "b": 1}])


def test_canonical_tuple_encodes_like_list_and_scalars_like_encode() -> None:
    assert canonical((1, "a")) == canonical([1, "a"]) == encode([1, "a"])
    for value in (None, 7, -1, 2.5, "s", b"b", True):
        assert canonical(value) == encode(value)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"a": 1}, {"a": 2}),
        (1, 1.0),
        (1, True),
        ("a", b"a"),
        ({"a": [1, 2]}, {"a": [2, 1]}),
        ({1: "x"}, {"1": "x"}),
    ],
)
def test_canonical_distinguishes_different_values(left: Any, right: Any) -> None:
    assert canonical(left) != canonical(right)


def test_canonical_unencodable_raises_encode_error() -> None:
    with pytest.raises(EncodeError):
        canonical({"a": {1, 2}})


def test_decode_allows_map_keys_that_are_maps() -> None:
    # PROTOCOL.md: map keys of any type, maps included. A map key becomes a FrozenMap: equal
    # to the dict it stands for, hashable, and encoded back as the same map.
    data = b"\x82" + encode({"a": 1}) + encode("x") + encode({"b": [1, {"c": 2}]}) + b"\x02"
    value = decode(data)
    assert value == {FrozenMap({"a": 1}): "x", FrozenMap({"b": (1, FrozenMap({"c": 2}))}): 2}
    key = next(iter(value))
    assert isinstance(key, FrozenMap) and key == {"a": 1}
    assert encode(value) == data
    assert decode_header(data) == value
    assert canonical(value) == canonical(decode(data))


def test_a_frozen_map_cannot_change() -> None:
    key = FrozenMap({"a": 1})
    with pytest.raises(TypeError):
        key["b"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        key.update(b=2)
    assert hash(key) == hash(FrozenMap({"a": 1}))
    assert repr(key) == "FrozenMap({'a': 1})"
