"""Run the zjobs benchmark (zjobs vs a hand-written pyzmq loop): python benchmarks/run.py.

Options: --quick (a smoke run), --json FILE (write the results; default
benchmarks/results/latest.json). The same as `zjobs bench`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness import main  # benchmarks/harness.py: this folder is sys.path[0] for a script

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--json" not in args:
        args += ["--json", str(Path(__file__).parent / "results" / "latest.json")]
    sys.exit(main(args))
