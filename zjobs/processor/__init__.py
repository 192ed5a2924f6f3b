"""Processors: thin drivers that serve one job over a transport, sync or asyncio."""

from zjobs.processor.sync import BaseZmqProcessor, Endpoints, Processor, ZmqProcessor

__all__ = ["BaseZmqProcessor", "Endpoints", "Processor", "ZmqProcessor"]
