"""The registry's own Prometheus metrics, and how a call is counted and timed in them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram

from services.registry.errors import PlatformError

T = TypeVar("T")

OUTBOX_RELAYED = Counter("mlops_registry_events_relayed_total", "Model events published from the outbox.")
OUTBOX_PENDING = Gauge(
    "mlops_registry_outbox_pending_events", "Model events waiting in the outbox at the relay's last look."
)
REQUESTS = Counter(
    "mlops_registry_requests_total",
    "Registry calls by method, transport and outcome.",
    ["method", "transport", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "mlops_registry_request_seconds",
    "Time to answer a registry call (artifact streaming included).",
    ["method", "transport"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ARTIFACT_BYTES = Counter(
    "mlops_registry_artifact_bytes_total", "Artifact bytes received and sent.", ["direction"]
)


@contextmanager
def measuring(method: str, transport: str) -> Iterator[None]:
    """Count the call made inside the block in :data:`REQUESTS` by outcome (``ok``, or the
    audit outcome of the platform error that ended it) and time it in :data:`REQUEST_SECONDS`."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except PlatformError as exc:
        outcome = exc.kind.outcome
        raise
    finally:
        REQUESTS.labels(method, transport, outcome).inc()
        REQUEST_SECONDS.labels(method, transport).observe(time.perf_counter() - started)


async def measured_call(method: str, operation: Callable[[], Awaitable[T]]) -> T:
    """What ``operation`` answers, the gRPC method ``method`` counted and timed (:func:`measuring`)."""
    with measuring(method, "grpc"):
        return await operation()
