"""Clients: thin drivers over the call engine, one for threads and one for asyncio."""

from zjobs.client.sync import Client

__all__ = ["Client"]
