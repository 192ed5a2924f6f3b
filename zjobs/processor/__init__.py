"""Processors: thin drivers that serve one job over a transport, sync, asyncio or in memory.

The asyncio processor (:mod:`zjobs.processor.aio`) is not imported here, so that importing
the sync ones does not import asyncio.
"""

from zjobs.processor.base import BaseZmqProcessor, Endpoints, HasEndpoints, Processor
from zjobs.processor.memory import MemoryProcessor
from zjobs.processor.sync import ZmqProcessor

__all__ = ["BaseZmqProcessor", "Endpoints", "HasEndpoints", "MemoryProcessor", "Processor",
           "ZmqProcessor"]
