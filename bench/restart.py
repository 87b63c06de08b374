"""How long each service takes to be healthy again after SIGKILL, against its import floor.

``python -m bench.restart [--rounds 3]``

On a local stack (every service its own process, the embedded broker and database), each
service in turn is killed with SIGKILL and started again as the stack's supervisor starts
it (without the supervisor's 1 s backoff), and the time until it answers its health check
is taken. The floor, measured in the same run: a fresh interpreter importing the service's
package and app (what a restart cannot avoid; on a quiet machine most of it is scikit-learn
and SciPy). Target (issue 14): every service healthy within 5 s of its restart. The load
average is printed with the figures: the machine is shared, and both grow with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.cli.stack import ALL_SERVICES, LocalStack
from services.cli.stack_state import StackPorts

TARGET_SECONDS = 5.0


def import_floor(service: str) -> float:
    """Seconds for a fresh interpreter to import ``service``'s entry point and app."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", f"import services.{service}.__main__, services.{service}.app"],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="kills per service (the median is reported)")
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    restarts: dict[str, list[float]] = {s: [] for s in ALL_SERVICES}
    floors: dict[str, list[float]] = {s: [] for s in ALL_SERVICES}
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as workdir:
        stack = LocalStack(Path(workdir), StackPorts.free())
        stack.start(timeout=300)  # a shared machine may take minutes to start six processes
        try:
            for _ in range(args.rounds):
                for service in ALL_SERVICES:
                    floors[service].append(import_floor(service))
                    stack.kill(service)
                    started = time.monotonic()
                    stack.restart(service)
                    restarts[service].append(time.monotonic() - started)
        finally:
            stack.stop()
    load = os.getloadavg()[0]
    print(
        f"kill -9, then restart to healthy (median of {args.rounds}); load average {load:.1f} on {os.cpu_count()} cores"
    )
    print(f"{'service':<10}{'restart s':>10}{'import s':>10}{'ratio':>7}  within {TARGET_SECONDS:g} s")
    within = True
    for service in ALL_SERVICES:
        restart, floor = statistics.median(restarts[service]), statistics.median(floors[service])
        ok = restart <= TARGET_SECONDS
        within &= ok
        print(f"{service:<10}{restart:>10.1f}{floor:>10.1f}{restart / floor:>7.1f}  {'yes' if ok else 'NO'}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
