"""asyncio: an async job awaiting I/O, served 50 at a time inside an existing event loop.

Run: python examples/async_example.py
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from zjobs import RemoteError
from zjobs.aio import AsyncZmqProcessor, AsyncZmqReceiver
from zjobs.aio.testing import wait_subscribed


class FakeHttp:
    """Stands in for an async HTTP client session (e.g. httpx.AsyncClient)."""

    async def get(self, url: str) -> int:
        await asyncio.sleep(0.1)  # 100 ms of network I/O
        return 404 if "missing" in url else 200

    async def aclose(self) -> None:
        print("resources: closed")


async def open_http() -> AsyncIterator[FakeHttp]:
    """An async generator factory: opened and closed inside the processor's loop."""
    print("resources: opened")
    http = FakeHttp()
    try:
        yield http
    finally:
        await http.aclose()


async def status(url: str, http: FakeHttp) -> int:
    """The async job: await I/O, return the status code; raising answers JobFailed."""
    if not url.startswith("https://"):
        raise ValueError(f"not an https URL: {url}")
    return await http.get(url)


async def main() -> None:
    urls = [f"https://example.org/page/{n}" for n in range(100)]
    async with AsyncZmqProcessor(status, resources=open_http, concurrency=50) as processor:
        async with processor.async_client() as client, \
                AsyncZmqReceiver(processor.connect_endpoints.responses) as watcher:
            await wait_subscribed(client.sender, watcher)  # probe, never sleep-and-hope
            start = time.perf_counter()
            codes = await asyncio.gather(*(client.call(url) for url in urls))
            elapsed = time.perf_counter() - start
            print(f"{len(codes)} calls of 100 ms each, 50 at a time: {elapsed:.2f} s "
                  f"(one at a time: {len(urls) * 0.1:.0f} s)")
            print("all 200:", all(code == 200 for code in codes))

            print("missing ->", await client.call("https://example.org/missing"))
            try:
                await client.call("ftp://example.org")
            except RemoteError as exc:
                print("error ->", exc.type, exc.message)

            # Every response is broadcast: a receiver sees them all, `async for` style.
            seen: list[Any] = []
            async for response in watcher:
                if response.ok:  # skip the probe's pongs
                    seen.append(response.value)
                if len(seen) >= 3:
                    break
            print("the watcher saw them too:", seen)
        print("counters:", processor.counters.as_dict())


def _usage() -> None:
    """Answer --help with this file's description; the example takes no options."""
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()


if __name__ == "__main__":
    _usage()
    asyncio.run(main())
