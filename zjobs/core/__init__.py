"""The core layer: jobs, the job-call flow, the call engine, options, cache, dedup and
resources. Transport-free: no sockets, no threads, no event loop."""
