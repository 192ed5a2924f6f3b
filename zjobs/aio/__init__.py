"""zjobs for asyncio: async jobs, and processors, clients, senders and receivers for a loop.

They sit beside the sync classes over the same ZJP/1 frames (:mod:`zjobs.protocol`) and
the same answering rules (:class:`zjobs.handler.RequestHandler`); only the waiting differs.
Nothing outside this package imports asyncio.

    from zjobs.aio import AsyncZmqProcessor

    async def fetch(url, http):
        return (await http.get(url)).status_code

    async with AsyncZmqProcessor(fetch, resources=open_http, concurrency=100) as processor:
        async with processor.async_client() as client:
            codes = await asyncio.gather(*(client.call(u) for u in urls))
"""

from zjobs.aio.client import AsyncClient
from zjobs.aio.job import AsyncGetCache, AsyncPutCache, AsyncRun, is_async_job
from zjobs.aio.processor import AsyncZmqProcessor
from zjobs.aio.receiver import AsyncZmqReceiver
from zjobs.aio.resources import AsyncResources
from zjobs.aio.sender import AsyncZmqSender

__all__ = [
    "AsyncClient",
    "AsyncGetCache",
    "AsyncPutCache",
    "AsyncResources",
    "AsyncRun",
    "AsyncZmqProcessor",
    "AsyncZmqReceiver",
    "AsyncZmqSender",
    "is_async_job",
]
