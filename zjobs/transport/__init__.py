"""The transport layer: ZeroMQ sockets (sync and asyncio), the in-memory bus and security.
Each class here owns its sockets or queues."""
