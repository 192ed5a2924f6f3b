"""A job, a processor in a background thread, and a client calling it.

Run: python examples/basics.py
"""

from __future__ import annotations

import argparse
from typing import Any

import zjobs


def square(request: int, resources: Any) -> int:
    """A plain function is a job: (request, resources) -> response."""
    if not isinstance(request, int):
        raise TypeError(f"expected an int, got {type(request).__name__}")
    return request * request


def main() -> None:
    # tcp://127.0.0.1:* lets the OS pick free ports; the processor reports what it bound.
    with zjobs.ZmqProcessor(square, name="square") as processor, processor.client() as client:
        print("processor:", processor)
        print("square(7) =", client.call(7))

        futures = [client.submit(n) for n in range(1000)]
        print("sum of 1000 squares =", sum(f.result() for f in futures))

        try:
            client.call("seven")
        except zjobs.RemoteError as exc:
            print(f"error response: type={exc.type} message={exc.message!r}")
        print("counters:", processor.counters)


def _usage() -> None:
    """Answer --help with this file's description; the example takes no options."""
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()


if __name__ == "__main__":
    _usage()
    main()
