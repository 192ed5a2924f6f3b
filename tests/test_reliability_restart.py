"""A processor daemon restarted on the same endpoints: the senders, receivers and clients
that were connected to it reconnect by themselves and work again."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from jobs_interop import Peer
from jobs_reliability import serve

from zjobs import Client, ProcessorMonitor, ReceiveTimeout, ZmqReceiver, ZmqSender
from zjobs.testing import wait_subscribed


def request_reply(sender: ZmqSender, receiver: ZmqReceiver, value: int) -> object:
    wait_subscribed(sender, receiver, topic="raw", timeout_s=30)
    rid = sender.send(value, reply_to="raw")
    while True:
        response = receiver.receive(timeout=30)
        if response.id == rid:
            return response.value


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", ["ipc", "tcp"])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_everything_reconnects_to_a_restarted_processor(
        transport: str, how: signal.Signals, ipc_dir: Path) -> None:
    if transport == "ipc":
        first = serve("double", f"ipc://{ipc_dir}/req", f"ipc://{ipc_dir}/rep")
    else:  # ports picked by a wildcard bind, then reused for the restart
        first = serve("double")
    peers: list[Peer] = [first]
    monitor = ProcessorMonitor()
    try:
        requests, responses = first.requests, first.responses
        with Client.connect(requests, responses, timeout_s=1.0, retries=30) as client, \
                ZmqSender(requests, send_timeout_s=30) as sender, \
                ZmqReceiver(responses, topics=["raw"], monitor=monitor) as receiver:
            assert client.call(1) == 2
            assert request_reply(sender, receiver, 2) == 4
            old_instance = client.call_response(0).instance

            code = first.stop(how)
            assert code == (0 if how == signal.SIGTERM else -signal.SIGKILL)
            second = serve("double", requests, responses)
            peers.append(second)
            assert (second.requests, second.responses) == (requests, responses)

            # The same objects, never recreated: the client's retries cover the time it
            # takes its sockets to reconnect and resubscribe.
            assert [client.call(n) for n in range(3, 8)] == [6, 8, 10, 12, 14]
            assert client.call_response(0).instance != old_instance
            assert request_reply(sender, receiver, 9) == 18
            with pytest.raises(ReceiveTimeout):
                receiver.receive(timeout=0.1)
            # The receiver's monitor tells the two runs apart by their instance.
            assert len(list(monitor)) == 2
    finally:
        for peer in peers:
            peer.stop()


@pytest.mark.timeout(180)
def test_first_answers_after_a_restart_reach_a_client_without_retries() -> None:
    # Two daemons behind one client, retries=0. One is killed and restarted on the same
    # endpoints: the client's request socket may reconnect before its subscription does,
    # so the restarted processor answers calls whose subscriber is not there yet. It holds
    # those answers until the subscription arrives: none of the calls made after the
    # restart is lost.
    a, b = serve("double", name="a"), serve("double", name="b")
    peers = [a, b]
    try:
        with Client.connect([a.requests, b.requests], [a.responses, b.responses],
                            timeout_s=20.0) as client:
            client.wait_ready(timeout_s=60)
            assert client.call(1) == 2
            current = a
            for cycle in range(3):  # the race is won or lost anew on every restart
                current.stop(signal.SIGKILL)
                current = serve("double", a.requests, a.responses, name="a")
                peers.append(current)
                futures = [client.submit(n) for n in range(500)]
                results = [f.exception(60) or f.result() for f in futures]
                lost = sum(isinstance(r, BaseException) for r in results)
                assert lost == 0, f"restart {cycle}: {lost} of 500 calls got no answer"
                assert results == [2 * n for n in range(500)]
            assert current.stop(signal.SIGTERM) == 0, current.diagnostics()
    finally:
        for peer in peers:
            peer.stop()
