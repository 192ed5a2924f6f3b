"""zjobs: event-driven jobs over ZeroMQ, speaking the ZJP/1 wire protocol.

A job implements ``run(request, resources)``; a processor serves it on a PULL socket
(requests) and a PUB socket (responses); clients in any language send and listen.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from zjobs.client.sync import Client
from zjobs.client.watcher import MembershipWatcher
from zjobs.compose.link import Link, LinkCounters
from zjobs.compose.pipeline import Pipeline, Stage
from zjobs.core.cache import CachedJob, MemoryCache, cached
from zjobs.core.handler import Counters
from zjobs.core.job import MISS, GetCache, PutCache, Run
from zjobs.core.load import LoadSnapshot
from zjobs.core.membership import Members, Membership, StaticMembership
from zjobs.core.monitor import ProcessorMonitor
from zjobs.errors import (
    BindError,
    CallTimeout,
    ClosedError,
    ConnectError,
    EncodeError,
    KeyFileError,
    LoadError,
    MembershipError,
    NotReady,
    ProcessorsGone,
    ProtocolError,
    ReceiveTimeout,
    RemoteError,
    SendTimeout,
    StageError,
    StartError,
    Timeout,
    ZJobsError,
)
from zjobs.processor.sync import Endpoints, Processor, ZmqProcessor
from zjobs.run.daemon import Daemon, ServeSettings
from zjobs.run.membership import SystemFileMembership
from zjobs.run.runner import ProcessorProcess
from zjobs.transport.keepalive import Keepalive
from zjobs.transport.memory import MemoryProcessor, MemoryReceiver, MemorySender
from zjobs.transport.receiver import McReceive, ZmqReceiver
from zjobs.transport.reconnect import Reconnect
from zjobs.transport.security import CurveClient, CurveServer, KeyPair
from zjobs.transport.sender import MpSend, ZmqSender
from zjobs.wire.protocol import ErrorInfo, Request, Response

if _TYPE_CHECKING:
    from zjobs.aio import (
        AsyncClient,
        AsyncGetCache,
        AsyncPutCache,
        AsyncRun,
        AsyncZmqProcessor,
        AsyncZmqReceiver,
        AsyncZmqSender,
    )
    from zjobs.transport.dns import DnsMembership

# The asyncio names load on first use, so that ``import zjobs`` does not import asyncio.
_ASYNC_NAMES = frozenset({
    "AsyncClient", "AsyncGetCache", "AsyncPutCache", "AsyncRun", "AsyncZmqProcessor",
    "AsyncZmqReceiver", "AsyncZmqSender",
})


def __getattr__(name: str) -> _Any:
    if name == "DnsMembership":  # dnspython takes ~0.1 s to import: only when used
        from zjobs.transport.dns import DnsMembership

        globals()[name] = DnsMembership
        return DnsMembership
    if name in _ASYNC_NAMES:
        from zjobs import aio

        value = getattr(aio, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zjobs' has no attribute {name!r}")


__version__ = "0.1.0"
"""The package version (what ``zjobs --version`` prints; see CHANGELOG.md)."""

__all__ = [
    "MISS",
    "AsyncClient",
    "AsyncGetCache",
    "AsyncPutCache",
    "AsyncRun",
    "AsyncZmqProcessor",
    "AsyncZmqReceiver",
    "AsyncZmqSender",
    "BindError",
    "CachedJob",
    "CallTimeout",
    "Client",
    "ClosedError",
    "ConnectError",
    "Counters",
    "CurveClient",
    "CurveServer",
    "Daemon",
    "DnsMembership",
    "EncodeError",
    "Endpoints",
    "ErrorInfo",
    "GetCache",
    "Keepalive",
    "KeyFileError",
    "KeyPair",
    "Link",
    "LinkCounters",
    "LoadError",
    "LoadSnapshot",
    "McReceive",
    "Members",
    "Membership",
    "MembershipError",
    "MembershipWatcher",
    "MemoryCache",
    "MemoryProcessor",
    "MemoryReceiver",
    "MemorySender",
    "MpSend",
    "NotReady",
    "Pipeline",
    "Processor",
    "ProcessorMonitor",
    "ProcessorProcess",
    "ProcessorsGone",
    "ProtocolError",
    "PutCache",
    "ReceiveTimeout",
    "Reconnect",
    "RemoteError",
    "Request",
    "Response",
    "Run",
    "SendTimeout",
    "ServeSettings",
    "Stage",
    "StageError",
    "StartError",
    "StaticMembership",
    "SystemFileMembership",
    "Timeout",
    "ZJobsError",
    "ZmqProcessor",
    "ZmqReceiver",
    "ZmqSender",
    "__version__",
    "cached",
]
