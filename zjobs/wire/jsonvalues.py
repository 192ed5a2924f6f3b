"""The reversible JSON form of msgpack values, used by the command line.

JSON has no bytes, no non-string map keys and no NaN, and msgpack has all three. Such
values are written as a JSON object with exactly one key, a *tag* starting with ``$``:

=====================================  ===============================================
msgpack value                          JSON form
=====================================  ===============================================
bin ``b"\\x00\\xff"``                  ``{"$bytes": "AP8="}`` (standard base64, padded)
map with a non-str key ``{1: "a"}``    ``{"$map": [[1, "a"]]}`` (a list of [key, value])
float NaN, +inf, -inf                  ``{"$float": "nan"}``, ``"inf"``, ``"-inf"``
ext type 5 with data ``b"\\x01"``      ``{"$ext": [5, "AQ=="]}``
=====================================  ===============================================

A map whose only key is one of these tags is itself written in the ``$map`` form, so
every value survives ``from_json(to_json(value))``. Everything else is plain JSON (arrays
are lists, a msgpack str is a JSON string). On input, a one-key object with an unknown
``$`` tag is an ordinary map.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import msgpack

__all__ = ["TAGS", "from_json", "to_json"]

TAGS = frozenset({"$bytes", "$map", "$float", "$ext"})
"""The tags of the reversible JSON form."""

_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_json(value: Any) -> Any:
    """A JSON-serialisable form of a decoded msgpack value (see the module docstring).

    Raises:
        TypeError: for a value msgpack cannot decode to (e.g. a set or a custom object).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return {"$float": "nan"}
        if math.isinf(value):
            return {"$float": "inf" if value > 0 else "-inf"}
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": _b64(bytes(value))}
    if isinstance(value, msgpack.Timestamp):
        return {"$ext": [-1, _b64(value.to_bytes())]}
    if isinstance(value, msgpack.ExtType):  # a namedtuple: before tuples
        return {"$ext": [value.code, _b64(value.data)]}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        plain = all(isinstance(key, str) for key in value)
        if plain and not (len(value) == 1 and next(iter(value)) in TAGS):
            return {key: to_json(item) for key, item in value.items()}
        return {"$map": [[to_json(key), to_json(item)] for key, item in value.items()]}
    raise TypeError(f"{type(value).__name__} is not a msgpack value")


def from_json(value: Any) -> Any:
    """The msgpack value a JSON value stands for: the inverse of :func:`to_json`.

    Raises:
        ValueError: a tagged object is malformed (the message says which and why).
    """
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        tag, body = next(iter(value.items()))
        if tag in TAGS:
            return _untag(tag, body)
    return {key: from_json(item) for key, item in value.items()}


def _untag(tag: str, body: Any) -> Any:
    if tag == "$bytes":
        return _unb64(tag, body)
    if tag == "$float":
        if body not in _FLOATS:
            raise ValueError(f'{{"$float": {body!r}}}: expected "nan", "inf" or "-inf"')
        return _FLOATS[body]
    if tag == "$ext":
        if not (isinstance(body, list) and len(body) == 2 and type(body[0]) is int
                and -128 <= body[0] <= 127):
            raise ValueError('{"$ext": ...}: expected [code (-128..127), "<base64>"]')
        return msgpack.ExtType(body[0], _unb64(tag, body[1]))
    # $map
    if not (isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 for p in body)):
        raise ValueError('{"$map": ...}: expected a list of [key, value] pairs')
    result: dict[Any, Any] = {}
    for key, item in body:
        key = from_json(key)
        if isinstance(key, list):
            key = tuple(key)  # a msgpack array as a map key must be hashable
        try:
            result[key] = from_json(item)
        except TypeError as exc:
            raise ValueError(f'{{"$map": ...}}: unusable key {key!r}: {exc}') from exc
    return result


def _unb64(tag: str, body: Any) -> bytes:
    if not isinstance(body, str):
        raise ValueError(f'{{"{tag}": ...}}: expected a base64 string, not {type(body).__name__}')
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise ValueError(f'{{"{tag}": {body!r}}}: invalid base64: {exc}') from exc
