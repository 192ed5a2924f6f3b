"""ReplayWindow: bounded by entries, age and bytes; repeats answered, running ones joined."""

from __future__ import annotations

import pytest

from zjobs.codec import decode, encode
from zjobs.dedup import JOINED, ReplayWindow, Stored, mark_replay


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frames(rid: str, value: int = 1) -> list[bytes]:
    return [b"topic", encode({"v": 1, "id": rid, "status": "ok"}), encode(value)]


def test_new_then_repeat_is_answered_from_the_window() -> None:
    window = ReplayWindow()
    assert window.claim((b"t", "a")) is None
    assert window.running == 1
    assert window.complete((b"t", "a"), frames("a")) == 0
    assert window.running == 0
    assert window.claim((b"t", "a")) == Stored(frames("a"), False)
    assert len(window) == 1


def test_key_is_topic_and_typed_id() -> None:
    window = ReplayWindow()
    window.claim((b"t", "a"))
    window.complete((b"t", "a"), frames("a"))
    assert window.claim((b"u", "a")) is None  # another client's topic
    assert window.claim((b"t", b"a")) is None  # a bin id is not the str id


def test_failures_are_remembered_as_failures() -> None:
    window = ReplayWindow()
    window.claim((b"t", "a"))
    window.complete((b"t", "a"), frames("a"), failed=True)
    stored = window.claim((b"t", "a"))
    assert isinstance(stored, Stored) and stored.failed


def test_repeat_of_running_request_joins_it() -> None:
    window = ReplayWindow()
    assert window.claim((b"t", "a")) is None
    assert window.claim((b"t", "a")) is JOINED
    assert window.claim((b"t", "a")) is JOINED
    assert window.complete((b"t", "a"), frames("a")) == 2
    assert isinstance(window.claim((b"t", "a")), Stored)


def test_release_forgets_a_running_request() -> None:
    window = ReplayWindow()
    window.claim((b"t", "a"))
    window.claim((b"t", "a"))
    assert window.release((b"t", "a")) == 1
    assert window.release((b"t", "a")) == 0
    assert window.claim((b"t", "a")) is None


def test_size_bound_evicts_oldest() -> None:
    window = ReplayWindow(size=3)
    for i in range(5):
        window.claim((b"t", str(i)))
        window.complete((b"t", str(i)), frames(str(i)))
    assert len(window) == 3
    assert window.claim((b"t", "0")) is None
    assert window.claim((b"t", "1")) is None
    assert isinstance(window.claim((b"t", "4")), Stored)


def test_ttl_counts_from_take_up() -> None:
    clock = Clock()
    window = ReplayWindow(ttl_s=10, clock=clock)
    window.claim((b"t", "old"))
    clock.now += 6
    window.complete((b"t", "old"), frames("old"))
    window.claim((b"t", "new"))
    window.complete((b"t", "new"), frames("new"))
    clock.now += 5  # "old" taken up 11 s ago, "new" 5 s ago
    assert window.claim((b"t", "old")) is None
    assert isinstance(window.claim((b"t", "new")), Stored)
    clock.now += 100
    window.claim((b"t", "x"))
    window.complete((b"t", "x"), frames("x"))
    assert len(window) == 1  # expired entries swept on insert
    assert window.nbytes == sum(map(len, frames("x")))


def test_byte_bound() -> None:
    one = sum(map(len, frames("0")))
    window = ReplayWindow(max_bytes=one * 2)
    for i in range(4):
        window.claim((b"t", str(i)))
        window.complete((b"t", str(i)), frames(str(i)))
    assert len(window) == 2
    assert window.nbytes <= one * 2


def test_size_zero_remembers_nothing_but_still_joins() -> None:
    window = ReplayWindow(size=0)
    window.claim((b"t", "a"))
    assert window.claim((b"t", "a")) is JOINED
    assert window.complete((b"t", "a"), frames("a")) == 1
    assert window.claim((b"t", "a")) is None
    assert len(window) == 0


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(size=-1)


def test_mark_replay_adds_the_header_key_and_keeps_the_rest() -> None:
    original = frames("a", 7)
    marked = mark_replay(original)
    assert marked[0] == original[0] and marked[2] == original[2]
    assert decode(marked[1]) == {**decode(original[1]), "replay": True}
