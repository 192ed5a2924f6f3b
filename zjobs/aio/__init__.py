"""zjobs for asyncio: async jobs, and processors, clients, senders and receivers for a loop.

They sit beside the sync classes over the same ZJP/1 frames (:mod:`zjobs.wire.protocol`) and
the same answering rules and job-call flow (:class:`zjobs.core.handler.RequestHandler`);
only the waiting differs. ``import zjobs`` does not import this package (nor asyncio).

    from zjobs.aio import AsyncZmqProcessor

    async def fetch(url, http):
        return (await http.get(url)).status_code

    async with AsyncZmqProcessor(fetch, resources=open_http, concurrency=100) as processor:
        async with processor.async_client() as client:
            codes = await asyncio.gather(*(client.call(u) for u in urls))
"""

from zjobs.client.aio import AsyncClient
from zjobs.client.async_watcher import AsyncMembershipWatcher
from zjobs.core.async_job import AsyncGetCache, AsyncPutCache, AsyncRun, is_async_job
from zjobs.core.async_resources import AsyncResources
from zjobs.core.options import ClientOptions  # what AsyncClient takes, as zjobs.ClientOptions
from zjobs.processor.aio import AsyncZmqProcessor
from zjobs.transport.async_receiver import AsyncMcReceive, AsyncZmqReceiver
from zjobs.transport.async_sender import AsyncMpSend, AsyncZmqSender

__all__ = [
    "AsyncClient",
    "AsyncGetCache",
    "AsyncMcReceive",
    "AsyncMembershipWatcher",
    "AsyncMpSend",
    "AsyncPutCache",
    "AsyncResources",
    "AsyncRun",
    "AsyncZmqProcessor",
    "AsyncZmqReceiver",
    "AsyncZmqSender",
    "ClientOptions",
    "is_async_job",
]
