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
