"""zjobs: event-driven jobs over ZeroMQ, speaking the ZJP/1 wire protocol.

A job implements ``run(request, resources)``; a processor serves it on a PULL socket
(requests) and a PUB socket (responses); clients in any language send and listen.
"""

from zjobs.aio import (
    AsyncClient,
    AsyncGetCache,
    AsyncPutCache,
    AsyncRun,
    AsyncZmqProcessor,
    AsyncZmqReceiver,
    AsyncZmqSender,
)
from zjobs.cache import CachedJob, MemoryCache, cached
from zjobs.client import Client
from zjobs.daemon import Daemon, ServeSettings
from zjobs.errors import (
    BindError,
    CallTimeout,
    ClosedError,
    ConnectError,
    EncodeError,
    KeyFileError,
    LoadError,
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
from zjobs.handler import Counters
from zjobs.heartbeat import ProcessorMonitor
from zjobs.job import MISS, GetCache, PutCache, Run
from zjobs.keepalive import Keepalive
from zjobs.link import Link, LinkCounters
from zjobs.memory import MemoryProcessor, MemoryReceiver, MemorySender
from zjobs.pipeline import Pipeline, Stage
from zjobs.processor import Endpoints, Processor, ZmqProcessor
from zjobs.protocol import ErrorInfo, Request, Response
from zjobs.receiver import McReceive, ZmqReceiver
from zjobs.runner import ProcessorProcess
from zjobs.security import CurveClient, CurveServer, KeyPair
from zjobs.sender import MpSend, ZmqSender

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
    "McReceive",
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
    "RemoteError",
    "Request",
    "Response",
    "Run",
    "SendTimeout",
    "ServeSettings",
    "Stage",
    "StageError",
    "StartError",
    "Timeout",
    "ZJobsError",
    "ZmqProcessor",
    "ZmqReceiver",
    "ZmqSender",
    "__version__",
    "cached",
]
