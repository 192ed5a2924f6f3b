"""Both clients route around a processor that stops answering (SIGSTOP: its host gone
silent), and use it again once it answers a probe (SIGCONT). Real daemons, real sockets;
counts only: answered, resent, answered by each processor in each phase."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from jobs_interop import Peer
from jobs_reliability import serve

from zjobs import AsyncClient, Client, Response
from zjobs.testing import wait_until

pytestmark = pytest.mark.timeout(120)

WORKERS = 8
PHASE_CALLS = 400


@pytest.fixture
def two() -> Iterator[tuple[Peer, Peer]]:
    a, b = serve("double", name="a"), serve("double", name="b")
    try:
        yield a, b
    finally:
        b.proc.send_signal(signal.SIGCONT)
        assert a.stop() == 0 and b.stop() == 0


def stop(peer: Peer) -> None:
    """SIGSTOP ``peer`` and wait until it is stopped (state T), so that no call made after
    this can be answered by it."""
    peer.proc.send_signal(signal.SIGSTOP)

    def stopped() -> bool:
        with open(f"/proc/{peer.proc.pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "T"

    wait_until(stopped)


def phase_sync(client: Client, calls: int) -> Counter[str]:
    """``calls`` calls from WORKERS threads; answers per processor."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    left = iter(range(calls))

    def work() -> None:
        for n in left:
            response = client.call_response(n)
            assert response.value == 2 * n
            with lock:
                seen[response.processor] += 1

    threads = [threading.Thread(target=work) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen


def test_client_routes_around_a_stopped_processor(two: tuple[Peer, Peer]) -> None:
    a, b = two
    with Client.connect([a.requests, b.requests], [a.responses, b.responses],
                        timeout_s=1.0, retries=8) as client:
        client.wait_ready()
        before = phase_sync(client, PHASE_CALLS)
        stop(b)
        during = phase_sync(client, PHASE_CALLS)
        resent = client.resent
        b.proc.send_signal(signal.SIGCONT)
        after = phase_sync(client, 4 * PHASE_CALLS)
    assert before["a"] > 0 and before["b"] > 0
    # While b was stopped only the calls in flight to it at first (one per worker, and
    # those sent before its first timed-out attempt) waited for a retry, all answered by a.
    assert during == {"a": PHASE_CALLS}
    assert resent <= 2 * WORKERS
    # Once b answered a probe it took calls again.
    assert sum(after.values()) == 4 * PHASE_CALLS and after["b"] > 0


def test_async_client_routes_around_a_stopped_processor(two: tuple[Peer, Peer]) -> None:
    a, b = two

    async def phase(client: AsyncClient, calls: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        left = iter(range(calls))

        async def work() -> None:
            for n in left:
                response: Response = await client.call_response(n)
                assert response.value == 2 * n
                seen[response.processor] += 1

        await asyncio.gather(*(work() for _ in range(WORKERS)))
        return seen

    async def main() -> tuple[Counter[str], Counter[str], int, Counter[str]]:
        async with AsyncClient.connect([a.requests, b.requests], [a.responses, b.responses],
                                       timeout_s=1.0, retries=8) as client:
            await client.wait_ready()
            before = await phase(client, PHASE_CALLS)
            stop(b)
            during = await phase(client, PHASE_CALLS)
            resent = client.resent
            b.proc.send_signal(signal.SIGCONT)
            after = await phase(client, 4 * PHASE_CALLS)
        return before, during, resent, after

    before, during, resent, after = asyncio.run(main())
    assert before["a"] > 0 and before["b"] > 0
    assert during == {"a": PHASE_CALLS}
    assert resent <= 2 * WORKERS
    assert sum(after.values()) == 4 * PHASE_CALLS and after["b"] > 0
