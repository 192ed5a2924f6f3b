"""The values of the ZJP/1 batch extension: many request values in one message, and what
came back for each.

A :class:`Batch` is what a client hands to a sender instead of one request value: the
items, already encoded as one msgpack array. A sender turns a request whose value is a
``Batch`` into a batch request (three frames, see ``docs/PROTOCOL.md``, "Extension:
batches"), which a processor that does not know the extension refuses with
``BadRequest`` instead of running. The answer's value is a :class:`BatchResult`: every
item's value, or its own error.

Frames are written and parsed in :mod:`zjobs.wire.protocol`; this module holds only the
values, so that it depends on nothing but the codec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from zjobs.errors import RemoteError
from zjobs.wire.codec import encode

__all__ = [
    "BATCH",
    "BATCH_TAG",
    "DEFAULT_BATCH_MAX",
    "EXTENSIONS_KEY",
    "Batch",
    "BatchResult",
    "array_header",
]

BATCH: Final = "batch"
"""The extension's name (in a pong's ``"ext"``) and the status of a batch response."""

BATCH_TAG: Final = b"batch"
"""Frame 3 of a batch request, raw bytes. A processor without the extension counts three
frames and answers ``BadRequest``: the frame count is what keeps it from running a batch."""

EXTENSIONS_KEY: Final = "ext"
"""The pong header key listing the extensions a processor implements."""

DEFAULT_BATCH_MAX: Final = 4096
"""Most items a zjobs processor accepts in one batch unless told otherwise."""

def array_header(count: int) -> bytes:
    """The msgpack header of an array of ``count`` values (their encodings follow it)."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 0x10000:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class Batch:
    """Request values sent in one batch request, as their encoded msgpack array.

    Send it as the value of a request (``client.call(Batch.of(values))``, or through any
    zjobs sender); the answer's value is a :class:`BatchResult`.

    Attributes:
        body: the msgpack array of the items (the request's frame 2).
        count: how many items it holds (1 or more).
    """

    body: bytes
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("a batch holds at least one item")

    @classmethod
    def of(cls, values: Sequence[Any]) -> Batch:
        """Encode ``values`` as one batch.

        Raises:
            EncodeError: an item cannot be encoded as msgpack (nothing is sent).
            ValueError: ``values`` is empty.
        """
        items = values if isinstance(values, list | tuple) else list(values)
        return cls(encode(items), len(items))

    @classmethod
    def of_encoded(cls, items: Sequence[bytes]) -> Batch:
        """A batch of items each already encoded as one msgpack value."""
        return cls(b"".join((array_header(len(items)), *items)), len(items))

    def __repr__(self) -> str:
        return f"Batch(count={self.count}, {len(self.body)} bytes)"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The answer to a batch: item ``i``'s value, or the error it failed with.

    Attributes:
        values: one entry per item, in item order: its value, or None where it failed.
        errors: the failed items, by index: a :class:`~zjobs.RemoteError` each (type
            ``"JobFailed"`` or ``"DeadlineExceeded"``).
        cached: True when every item's value came from the processor's cache.
    """

    values: list[Any]
    errors: dict[int, RemoteError] = field(default_factory=dict)
    cached: bool = False

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"BatchResult({len(self.values)} items, {len(self.errors)} failed)"

    @property
    def ok(self) -> bool:
        """True when no item failed."""
        return not self.errors

    def outcomes(self) -> list[Any]:
        """Every item's value, with the :class:`~zjobs.RemoteError` in place of a failed one."""
        if not self.errors:
            return self.values
        out = list(self.values)
        for index, error in self.errors.items():
            out[index] = error
        return out

    def unwrap(self) -> list[Any]:
        """Every item's value; raise the first failed item's error instead, if any."""
        if self.errors:
            raise self.errors[min(self.errors)]
        return self.values
