"""The same Client over the in-memory transport: no sockets, handy in unit tests.

Run: python examples/in_memory.py
"""

from __future__ import annotations

import argparse
from typing import Any

import zjobs


def greet(request: str, resources: Any) -> str:
    return f"hello, {request}"


def main() -> None:
    with zjobs.MemoryProcessor(greet) as processor, processor.client() as client:
        print(client.call("world"))
        print(processor.counters)


def _usage() -> None:
    """Answer --help with this file's description; the example takes no options."""
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()


if __name__ == "__main__":
    _usage()
    main()
