"""Prometheus metrics of the ingest service.

The ``dataset`` label only ever takes the names of registered datasets, or
``unknown`` for events that name no registered dataset: a hostile producer cannot
grow the label set by inventing dataset names.
"""

from __future__ import annotations

from prometheus_client import Counter

UNKNOWN_DATASET = "unknown"

EVENTS = Counter(
    "mlops_ingest_events_total",
    "Events processed, by dataset and outcome (accepted, duplicate, rejected).",
    ["dataset", "outcome"],
)
REJECTIONS = Counter(
    "mlops_ingest_rejections_total",
    "Events refused, by dataset and reason (missing_field, wrong_type, out_of_range...).",
    ["dataset", "reason"],
)
LABELS = Counter(
    "mlops_ingest_labels_total",
    "Labels published for earlier events: attached to a stored row, or waiting for the event.",
    ["dataset", "state"],
)
