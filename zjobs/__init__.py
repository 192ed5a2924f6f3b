"""zjobs: event-driven jobs over ZeroMQ, speaking the ZJP/1 wire protocol.

A job implements ``run(request, resources)``; a processor serves it on a PULL socket
(requests) and a PUB socket (responses); clients in any language send and listen.

The names below are the public API, grouped by concept; the modules they come from are
private. The asyncio names (and ``DnsMembership``, which needs dnspython) load on first
use, so that ``import zjobs`` imports neither asyncio nor click.
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
from zjobs.core.options import ClientOptions, Keepalive, ProcessorOptions
from zjobs.errors import (
    BindError,
    CallTimeout,
    ClosedError,
    ConnectError,
    CrashedError,
    EncodeError,
    KeyFileError,
    LoadError,
    MembershipError,
    NotReady,
    OptionsError,
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
from zjobs.processor.base import Endpoints, Processor
from zjobs.processor.memory import MemoryProcessor
from zjobs.processor.sync import ZmqProcessor
from zjobs.run.daemon import Daemon, ServeSettings
from zjobs.run.membership import SystemFileMembership
from zjobs.run.runner import ProcessorProcess
from zjobs.transport.memory import MemoryReceiver, MemorySender
from zjobs.transport.receiver import McReceive, ZmqReceiver
from zjobs.transport.reconnect import Reconnect
from zjobs.transport.security import CurveClient, CurveServer, KeyPair
from zjobs.transport.sender import MpSend, ZmqSender
from zjobs.wire.batch import Batch, BatchResult
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
        from zjobs import aio  # the facade sits beside this one; it imports asyncio

        value = getattr(aio, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zjobs' has no attribute {name!r}")


__version__ = "0.1.0"
"""The package version (what ``zjobs --version`` prints; see CHANGELOG.md)."""

__all__ = [  # noqa: RUF022 (grouped by concept, as the README presents them)
    # Jobs: what a job is, and caching its answers
    "Run",
    "GetCache",
    "PutCache",
    "MISS",
    "cached",
    "CachedJob",
    "MemoryCache",
    # Processors: serving a job, and how
    "Processor",
    "ZmqProcessor",
    "ProcessorOptions",
    "Keepalive",
    "Endpoints",
    "Counters",
    "LoadSnapshot",
    # Calling processors: clients, senders and receivers, the messages they carry
    "Client",
    "ClientOptions",
    "MpSend",
    "McReceive",
    "ZmqSender",
    "ZmqReceiver",
    "Reconnect",
    "Request",
    "Response",
    "ErrorInfo",
    "Batch",
    "BatchResult",
    "ProcessorMonitor",
    # Membership: which processors a client talks to, and how that set changes
    "Members",
    "Membership",
    "StaticMembership",
    "SystemFileMembership",
    "DnsMembership",
    "MembershipWatcher",
    # In memory, without sockets (for tests)
    "MemoryProcessor",
    "MemorySender",
    "MemoryReceiver",
    # asyncio (zjobs.aio; loaded on first use)
    "AsyncRun",
    "AsyncGetCache",
    "AsyncPutCache",
    "AsyncZmqProcessor",
    "AsyncClient",
    "AsyncZmqSender",
    "AsyncZmqReceiver",
    # Composition: links and pipelines between processors
    "Link",
    "LinkCounters",
    "Pipeline",
    "Stage",
    # Processes and daemons
    "ProcessorProcess",
    "Daemon",
    "ServeSettings",
    # Security (CURVE)
    "CurveServer",
    "CurveClient",
    "KeyPair",
    # Errors (the tree is drawn in zjobs.errors)
    "ZJobsError",
    "ProtocolError",
    "EncodeError",
    "BindError",
    "ConnectError",
    "StartError",
    "CrashedError",
    "OptionsError",
    "LoadError",
    "KeyFileError",
    "MembershipError",
    "RemoteError",
    "StageError",
    "Timeout",
    "SendTimeout",
    "ReceiveTimeout",
    "CallTimeout",
    "ProcessorsGone",
    "NotReady",
    "ClosedError",
    # The version
    "__version__",
]
