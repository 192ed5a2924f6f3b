"""A small TCP forwarder that delays every byte it passes on: netem's ``delay`` in userspace,
for kernels without it.

    python netns_forwarder.py --delay-ms 50 LISTEN_HOST TARGET_HOST:PORT [TARGET ...]

For each target it listens on ``LISTEN_HOST`` (a port chosen by the system), prints
``forward LISTEN_HOST:PORT TARGET`` and, once all are listening, ``ready``. Every chunk read
from one side is written to the other ``--delay-ms`` after it arrived, in order, in both
directions. Bounded: at most ``--max-connections`` connections and ``--buffer-chunks`` chunks
(64 KiB each at most) held per direction, so a peer that stops reading slows the other
down instead of filling memory. Self-stopping: it exits when its standard input closes
(the test that started it ended, however it ended) or after ``--max-s`` seconds.

Loss is not its business: dropping bytes from a TCP stream would corrupt it. Real packet
loss comes from nftables in the router namespace (see ``netns.RoutedNetwork.loss``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

CHUNK = 64 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float,
                buffer_chunks: int) -> None:
    """Copy reader to writer, each chunk ``delay_s`` after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(buffer_chunks)

    async def deliver() -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    delivery = asyncio.create_task(deliver())
    try:
        while data := await reader.read(CHUNK):
            await queue.put((loop.time() + delay_s, data))  # waits while the queue is full
        await queue.put(None)
        await delivery
    finally:
        delivery.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await delivery


class Forwarder:
    """Listens for one target and forwards every connection to it, delayed."""

    def __init__(self, target: str, delay_s: float, buffer_chunks: int,
                 connections: asyncio.Semaphore) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.delay_s = delay_s
        self.buffer_chunks = buffer_chunks
        self._connections = connections

    async def handle(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        if self._connections.locked():
            client_w.close()
            return
        async with self._connections:
            try:
                server_r, server_w = await asyncio.open_connection(*self.target)
            except OSError:
                client_w.close()
                return
            pumps = [
                asyncio.create_task(_pump(client_r, server_w, self.delay_s, self.buffer_chunks)),
                asyncio.create_task(_pump(server_r, client_w, self.delay_s, self.buffer_chunks)),
            ]
            # Either side failing (reset, closed) ends the connection on both sides.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            for task in pumps:
                task.cancel()
            for writer in (server_w, client_w):
                writer.close()
            await asyncio.gather(*pumps, return_exceptions=True)


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("listen", help="address to listen on (a port is chosen per target)")
    parser.add_argument("targets", nargs="+", help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=50.0,
                        help="delay added in each direction (default 50)")
    parser.add_argument("--max-s", type=float, default=600.0,
                        help="exit after this many seconds at the latest (default 600)")
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--buffer-chunks", type=int, default=64)
    args = parser.parse_args(argv)
    connections = asyncio.Semaphore(args.max_connections)
    servers = []
    for target in args.targets:
        forwarder = Forwarder(target, args.delay_ms / 1000, args.buffer_chunks, connections)
        server = await asyncio.start_server(forwarder.handle, args.listen, 0)
        port = server.sockets[0].getsockname()[1]
        print(f"forward {args.listen}:{port} {target}", flush=True)
        servers.append(server)
    print("ready", flush=True)
    try:
        await asyncio.wait_for(_stdin_closed(), args.max_s)
    except TimeoutError:
        pass
    finally:
        for server in servers:
            server.close()


if __name__ == "__main__":
    asyncio.run(main())
