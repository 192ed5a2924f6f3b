"""Send texts through the example pipeline running on Kubernetes (the pipeline-call Job).

The entry is every parse pod and the exit every store pod, found through their headless
Services: a short-lived caller reads the names once; a long-running one would pass the
same DnsMembership to ``Client.connect(membership=...)`` to follow the pods as they come
and go.

    python call.py "a great day" "slow and broken"
"""

from __future__ import annotations

import argparse
import sys

import zjobs

NAMESPACE = "zjobs-pipeline"
ENTRY = f"dns://parse.{NAMESPACE}.svc.cluster.local:5555"   # parse's requests
EXIT = f"dns://store.{NAMESPACE}.svc.cluster.local:5560"    # store's responses


def main(texts: list[str]) -> int:
    members = zjobs.DnsMembership(ENTRY, EXIT).members()
    print(f"entry {list(members.requests)}, exit {list(members.responses)}")
    failed = 0
    with zjobs.Pipeline.connect(members.requests, members.responses, timeout_s=30) as pipeline:
        for text in texts:
            try:
                print(f"{text!r} -> {pipeline.call(text)}")
            except zjobs.StageError as exc:
                failed += 1
                print(f"{text!r} failed at stage {exc.stage!r}: {exc.message}")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to send through the "
                        "pipeline [default: three samples]")
    sys.exit(main(parser.parse_args().texts or ["a great day", "slow and broken", ""]))
