"""The registry's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
