"""Benchmark harness (not part of the test suite): ``make bench`` or ``.venv/bin/python bench/run.py [--quick]``.

Starts the four services as processes on fresh databases, a fresh AMQP prefix and keys, with an SMTP server in
this process; measures HTTP reads and writes (closed loop), the welcome flow from POST to the SMTP server's
acceptance (open loop at fixed rates), CPU and memory; prints a table and writes ``bench/results/<time>.json``;
then stops the services and deletes the databases, queues and exchanges it created. See ``--help``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
