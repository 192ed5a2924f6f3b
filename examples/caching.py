"""GetCache: a job answers from a cache instead of running; None is a valid cached answer.

Run: python examples/caching.py
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import zjobs


@zjobs.cached(maxsize=1000, ttl_s=60)
def slow_lookup(request: str, resources: Any) -> str | None:
    """Pretend to be expensive; the processor fills the cache after each successful run."""
    time.sleep(0.05)
    return None if request == "nobody" else request.upper()


class Directory:
    """A job with its own GetCache: the cache lives in its resources (here a dict)."""

    def run(self, request: str, resources: dict[str, str]) -> str:
        resources[request] = f"entry for {request}"
        return resources[request]

    def get_cache(self, request: str, resources: dict[str, str]) -> Any:
        return resources.get(request, zjobs.MISS)


def main() -> None:
    with zjobs.ZmqProcessor(slow_lookup) as processor, processor.client() as client:
        for name in ["ada", "ada", "nobody", "nobody"]:
            response = client.call_response(name)
            print(f"{name!r:10} -> {response.value!r:8} cached={response.cached}")
        print("counters:", processor.counters)

    with zjobs.ZmqProcessor(Directory(), resources=dict) as processor, processor.client() as c:
        print([c.call_response("bob").cached for _ in range(3)])


def _usage() -> None:
    """Answer --help with this file's description; the example takes no options."""
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()


if __name__ == "__main__":
    _usage()
    main()
