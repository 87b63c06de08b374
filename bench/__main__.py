"""Run every benchmark in turn: ``python -m bench`` (or ``make bench``).

Each benchmark is also runnable alone: ``python -m bench.<name>``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main() -> int:
    # The soak runs the whole stack for half an hour by default: run it by itself.
    names = sorted(
        m.name
        for m in pkgutil.iter_modules(bench.__path__)
        if not m.name.startswith("_") and m.name != "soak"
    )
    failures = 0
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        module = importlib.import_module(f"bench.{name}")
        failures += int(module.main() != 0)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
