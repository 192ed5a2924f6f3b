"""msgpack encoding with zjobs' fixed settings, written out once.

``bytes`` travel as msgpack bin and ``str`` as msgpack str (``use_bin_type=True``), and
decoding keeps them apart (``raw=False``), so an id or a value keeps its type across
languages. Nothing here ever unpickles.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack

from zjobs.errors import EncodeError, ProtocolError

__all__ = ["FrozenMap", "canonical", "decode", "decode_header", "encode", "extend_map"]


def encode(value: Any) -> bytes:
    """Encode a value as msgpack; raise :class:`EncodeError` if msgpack cannot represent it."""
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot encode {type(value).__name__} as msgpack: {exc}") from exc


class FrozenMap(dict[Any, Any]):
    """A msgpack map used as a map key: an immutable, hashable dict.

    ZJP/1 allows map keys of any type. Python cannot hash a dict, so a map that is a key
    decodes to a FrozenMap (an array key to a tuple). It equals the dict it stands for and
    encodes back to the same msgpack map.
    """

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({dict.__repr__(self)})"

    def _immutable(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a FrozenMap (a map used as a map key) cannot change")

    __setitem__ = __delitem__ = __ior__ = _immutable
    clear = pop = popitem = setdefault = update = _immutable


def _freeze(key: Any) -> Any:
    # An array or a map used as a map key arrives as a list or a dict, which Python cannot
    # hash; so does anything inside it.
    if isinstance(key, list | tuple):
        return tuple(_freeze(item) for item in key)
    if isinstance(key, dict) and not isinstance(key, FrozenMap):
        return FrozenMap((_freeze(k), _freeze(v)) for k, v in key.items())
    return key


def _dict_with_frozen_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {_freeze(key): value for key, value in pairs}


def _unpack(data: bytes | memoryview) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except TypeError:
        # A map with an array or map key (rare): decode again, turning such keys into
        # tuples and FrozenMaps. The hook is slower, so the common case goes without it.
        return msgpack.unpackb(data, raw=False, strict_map_key=False,
                               object_pairs_hook=_dict_with_frozen_keys)


def decode(data: bytes | memoryview) -> Any:
    """Decode exactly one msgpack value; raise :class:`ProtocolError` on anything else.

    Map keys may be of any type, as request values from other languages allow: an array
    key becomes a tuple and a map key a :class:`FrozenMap` (a list or a dict cannot be a
    dict key); arrays and maps elsewhere are lists and dicts.
    """
    try:
        return _unpack(data)
    except Exception as exc:  # msgpack raises several unrelated types (ExtraData, ValueError, ...)
        raise ProtocolError(f"not a single msgpack value: {exc}") from exc


def decode_header(data: bytes | memoryview) -> Any:
    """Decode a header frame: like :func:`decode`, with an error message naming the header."""
    try:
        return _unpack(data)
    except Exception as exc:
        raise ProtocolError(f"header is not a single msgpack value: {exc}") from exc


def extend_map(encoded: bytes, entries: bytes, count: int) -> bytes:
    """Append ``count`` encoded key/value pairs (``entries``) to the encoded map ``encoded``.

    Used to add keys to an already encoded header (a sequence number, a replay mark)
    without decoding it. A key that was already there is repeated; ZJP/1 readers take the
    last occurrence.

    Raises:
        ProtocolError: ``encoded`` does not start with a msgpack map header.
    """
    first = encoded[0] if encoded else 0
    if 0x80 <= first <= 0x8F:
        size, start = first & 0x0F, 1
    elif first == 0xDE and len(encoded) >= 3:
        size, start = int.from_bytes(encoded[1:3], "big"), 3
    elif first == 0xDF and len(encoded) >= 5:
        size, start = int.from_bytes(encoded[1:5], "big"), 5
    else:
        raise ProtocolError("not an encoded msgpack map")
    size += count
    if size < 16:
        head = bytes((0x80 | size,))
    elif size < 0x10000:
        head = b"\xde" + size.to_bytes(2, "big")
    else:
        head = b"\xdf" + size.to_bytes(4, "big")
    return b"".join((head, memoryview(encoded)[start:], entries))


def _normalize(value: Any) -> Any:
    # Maps are ordered by their encoded keys so that equal maps encode to equal bytes.
    if isinstance(value, dict):
        return dict(sorted(((encode(k), _normalize(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    return value


def canonical(value: Any) -> bytes:
    """The canonical msgpack bytes of a value: equal values give equal bytes.

    Map entries are sorted by the bytes of their keys, and tuples encode like lists,
    so the result is a stable cache key for a request.
    """
    if not isinstance(value, dict | list | tuple):
        return encode(value)
    return _encode_normalized(_normalize(value))


def _encode_normalized(value: Any) -> bytes:
    # Keys were replaced by their encodings; write them back as raw msgpack.
    packer = msgpack.Packer(use_bin_type=True)
    out = bytearray()
    _write(packer, value, out)
    return bytes(out)


def _write(packer: msgpack.Packer, value: Any, out: bytearray) -> None:
    if isinstance(value, dict):
        out += packer.pack_map_header(len(value))
        for key_bytes, item in value.items():
            out += key_bytes
            _write(packer, item, out)
    elif isinstance(value, list):
        out += packer.pack_array_header(len(value))
        for item in value:
            _write(packer, item, out)
    else:
        out += encode(value)
