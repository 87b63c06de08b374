"""The garbage collector of a long-running service whose heap is mostly what it loaded.

CPython's cyclic collector walks every tracked object in a full collection, and a full
collection comes each time the objects that survived younger ones grow by a quarter. A
service's modules (faust, river, numpy, gRPC, FastAPI) are most of its heap and never
become garbage, yet every full collection walked them again: in the monitor, through a
backlog, 10 full collections took 1.2 s of 9.5 CPU seconds (docs/monitor.md); in serving,
one took about 100 ms and stalled every request in flight (docs/serving.md).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Allocations between two collections of the youngest generation (CPython's default: 700).
A batch of a few hundred records allocates thousands of objects that are freed by reference
counting when it is done; collecting every 700 found little but walked the batch each time."""


def freeze_startup_heap() -> int:
    """Collect once, then move every object that survived into the permanent generation,
    which no collection walks, and collect the young generation less often. Returns how
    many objects were frozen.

    Call it once the service has started: what it allocates afterwards is collected as
    before.

    >>> before = gc.get_threshold()
    >>> frozen = freeze_startup_heap()
    >>> frozen > 0, gc.get_threshold()[0] == YOUNG_THRESHOLD
    (True, True)
    >>> gc.unfreeze(); gc.set_threshold(*before)
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return gc.get_freeze_count()
