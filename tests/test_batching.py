"""zjobs.core.batching: a map's chunks, window, order and per-item errors, driven by a fake
client (no sockets)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgpack
import pytest

from zjobs.core.batching import (
    Chunk,
    Emit,
    MapFlow,
    Send,
    Wait,
    batch_limit,
    map_window,
)
from zjobs.errors import CallTimeout, EncodeError, ProtocolError, RemoteError
from zjobs.wire.batch import Batch, BatchResult


class FakeClient:
    """Answers a flow's actions: a batch is squared item by item unless ``answer`` says
    otherwise; it records the chunks sent and the most values ever in flight."""

    def __init__(self, answer: Callable[[Chunk], Any] | None = None) -> None:
        self.answer = answer
        self.sent: list[Chunk] = []
        self.in_flight = 0
        self.most = 0

    def run(self, flow: MapFlow) -> list[Any]:
        out: list[Any] = []
        actions = flow.actions()
        reply: Any = None
        while True:
            try:
                action = actions.send(reply)
            except StopIteration:
                return out
            reply = None
            if isinstance(action, Send):
                self.sent.append(action.chunk)
                self.in_flight += len(action.chunk.values)
                self.most = max(self.most, self.in_flight)
                reply = action.chunk
            elif isinstance(action, Wait):
                chunk: Chunk = action.handle
                self.in_flight -= len(chunk.values)
                reply = self.reply(chunk)
            else:
                assert isinstance(action, Emit)
                assert action.failed == any(isinstance(o, BaseException)
                                            for o in action.outcomes)
                out.extend(action.outcomes)

    def reply(self, chunk: Chunk) -> Any:
        if self.answer is not None:
            return self.answer(chunk)
        if chunk.batch is not None:
            items = msgpack.unpackb(chunk.batch.body)
            return BatchResult([v * v for v in items])
        return [v * v for v in chunk.values]


def flow(values: Iterable[Any], limit: int | Callable[[], int] = 10, window: int = 30,
         **options: Any) -> MapFlow:
    return MapFlow(values, limit=limit if callable(limit) else (lambda: limit), window=window,
                   **options)


def test_values_come_back_in_order_in_bounded_batches() -> None:
    client = FakeClient()
    mapping = flow(range(95), limit=10, window=30)
    assert client.run(mapping) == [i * i for i in range(95)]
    assert [c.batch.count for c in client.sent if c.batch is not None] == [10] * 9 + [5]
    assert client.most <= 30
    assert (mapping.batches, mapping.singles, mapping.refused) == (10, 0, 0)


def test_the_input_is_read_lazily() -> None:
    read: list[int] = []

    def source() -> Iterable[int]:
        for i in range(1_000_000):
            read.append(i)
            yield i

    actions = flow(source(), limit=10, window=30).actions()
    action = next(actions)
    while not isinstance(action, Wait):
        action = actions.send(action.chunk if isinstance(action, Send) else None)
    assert len(read) == 30  # the window, not the input


def test_no_batching_sends_chunks_of_singles() -> None:
    client = FakeClient()
    mapping = flow(range(250), limit=0, window=1_000)
    assert client.run(mapping) == [i * i for i in range(250)]
    assert all(chunk.batch is None for chunk in client.sent)
    assert [len(chunk.values) for chunk in client.sent] == [100, 100, 50]
    assert mapping.singles == 250


def test_the_limit_is_asked_before_every_chunk() -> None:
    limits = iter([10, 10, 0, 0, 0, 0])
    client = FakeClient()
    assert client.run(flow(range(40), limit=lambda: next(limits), window=1_000)) == [
        i * i for i in range(40)]
    assert [chunk.batch is not None for chunk in client.sent] == [True, True, False]


def test_a_refused_batch_is_sent_again_as_singles_and_batching_stops() -> None:
    refused = RemoteError("BadRequest", "a request has 2 frames, this message has 3")

    def answer(chunk: Chunk) -> Any:
        if chunk.batch is not None and chunk.values[0] == 10:
            return refused
        return FakeClient().reply(chunk)

    client = FakeClient(answer)
    mapping = flow(range(60), limit=10, window=30)
    assert client.run(mapping) == [i * i for i in range(60)]
    assert mapping.refused == 1
    kinds = [(chunk.values[0], chunk.batch is not None) for chunk in client.sent]
    # Three batches fill the window; when the first is answered a fourth goes; the second
    # is refused and goes again one by one, and so does everything read after that.
    assert kinds[:5] == [(0, True), (10, True), (20, True), (30, True), (10, False)]
    assert all(not batched for _, batched in kinds[5:])


def test_an_error_for_the_whole_batch_fails_each_of_its_items() -> None:
    timeout = CallTimeout("b", 1.0, 2)
    client = FakeClient(lambda chunk: timeout if chunk.values[0] == 10 else
                        FakeClient().reply(chunk))
    out = client.run(flow(range(30), limit=10))
    assert out[:10] == [i * i for i in range(10)]
    assert out[10:20] == [timeout] * 10
    assert out[20:] == [i * i for i in range(20, 30)]


def test_a_send_that_raised_fails_its_batch_without_a_wait() -> None:
    error = ConnectionError("no room")
    mapping = flow(range(5), limit=10)
    actions = mapping.actions()
    assert isinstance(next(actions), Send)
    emitted = actions.send(error)  # the driver's send raised: its error is the handle
    assert isinstance(emitted, Emit) and emitted.outcomes == [error] * 5 and emitted.failed


def test_per_item_errors_keep_their_place() -> None:
    failure = RemoteError("JobFailed", "TypeError: no")

    def answer(chunk: Chunk) -> Any:
        assert chunk.batch is not None
        items = msgpack.unpackb(chunk.batch.body)
        return BatchResult([None if v == 3 else v for v in items], {3: failure})

    assert FakeClient(answer).run(flow(range(5))) == [0, 1, 2, failure, 4]


def test_unencodable_values_fail_alone_and_are_not_sent() -> None:
    client = FakeClient()
    out = client.run(flow([1, {2}, 3, object()], limit=10))
    assert out[0] == 1 and out[2] == 9
    assert isinstance(out[1], EncodeError) and isinstance(out[3], EncodeError)
    [chunk] = client.sent
    assert chunk.values == [1, 3] and chunk.batch == Batch.of([1, 3])


def test_a_chunk_of_only_unencodable_values_sends_nothing() -> None:
    client = FakeClient()
    out = client.run(flow([{1}, {2}], limit=10))
    assert client.sent == []
    assert all(isinstance(o, EncodeError) for o in out) and len(out) == 2


def test_a_batch_over_the_byte_limit_is_split() -> None:
    client = FakeClient(lambda chunk: BatchResult(list(chunk.values)))
    values = ["x" * 100] * 16
    assert client.run(flow(values, limit=16, max_bytes=500)) == values
    assert all(chunk.batch is not None and len(chunk.batch.body) <= 500
               for chunk in client.sent)
    assert sum(len(chunk.values) for chunk in client.sent) == 16


def test_a_result_of_the_wrong_length_is_a_protocol_error() -> None:
    out = FakeClient(lambda chunk: BatchResult([1])).run(flow(range(3)))
    assert all(isinstance(o, ProtocolError) for o in out) and len(out) == 3
    odd = FakeClient(lambda chunk: "what").run(flow(range(2)))
    assert all(isinstance(o, ProtocolError) for o in odd)


def test_outstanding_lists_what_is_in_flight() -> None:
    mapping = flow(range(30), limit=10, window=30)
    actions = mapping.actions()
    action = next(actions)
    handles = []
    while isinstance(action, Send):
        handles.append(action.chunk)
        action = actions.send(action.chunk)
    assert mapping.outstanding() == handles[1:]  # the first is being waited for
    actions.close()


@pytest.mark.parametrize(("advertised", "wanted", "expected"), [
    ([(("batch",), 500)], 1000, 500),
    ([(("batch",), 5000), (("batch", "other"), 2000)], 1000, 1000),
    ([(("batch",), 500), ((), None)], 1000, 0),
    ([(("batch",), None)], 1000, 0),
    ([], 1000, 0),
])
def test_batch_limit(advertised: list[tuple[tuple[str, ...], int | None]], wanted: int,
                     expected: int) -> None:
    assert batch_limit(advertised, wanted) == expected


def test_map_window() -> None:
    assert map_window(1000, None) == (1000, 4000)
    assert map_window(10, None) == (10, 1000)
    assert map_window(10, 5) == (10, 5)
    for bad in ((0, None), (10, 0)):
        with pytest.raises(ValueError):
            map_window(*bad)
    with pytest.raises(ValueError):
        MapFlow([], limit=lambda: 1, window=0)
