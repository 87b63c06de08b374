"""Prometheus metrics shared by every service.

Names follow the Prometheus conventions: the ``mlops_`` prefix, base units
(``_seconds``, ``_bytes``), ``_total`` on counters. Service-specific metrics live in
their service; the ones here measure the shared plumbing.

Several processes can share their metrics (prometheus_client's multiprocess mode: a serving
replica's workers, :mod:`services.serving.workers`): each writes its values to files in
:data:`SHARED_DIRECTORY_VARIABLE`'s directory, and ``/metrics`` merges them all. Counters and
histograms add up; every gauge such a process sets says how its workers' values merge
(``multiprocess_mode``), ``live`` ones forgetting a worker that exited.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "mlops"
SHARED_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's: set before it is imported, it writes this process's metrics there."""


def shared_directory() -> str | None:
    """The directory this process shares its metrics in with its replica's other workers, if any."""
    return os.environ.get(SHARED_DIRECTORY_VARIABLE) or None


KAFKA_CONSUMED = Counter(
    f"{PREFIX}_kafka_records_consumed_total", "Records consumed from Kafka.", ["topic", "group"]
)
KAFKA_DEAD_LETTERS = Counter(
    f"{PREFIX}_kafka_dead_letters_total",
    "Records sent to a dead-letter topic, by the reason they were refused.",
    ["topic", "error_class"],
)
KAFKA_BATCH_SECONDS = Histogram(
    f"{PREFIX}_kafka_batch_seconds",
    "Time to handle one consumed batch, commit included.",
    ["group"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
KAFKA_CONSUMER_LAG = Gauge(
    f"{PREFIX}_kafka_consumer_lag_records",
    "Records between the committed position and the partition's end.",
    ["group", "topic", "partition"],
    # A partition's current owner reports it last; a worker that lost it keeps a stale value,
    # and a sum would count the partition twice.
    multiprocess_mode="livemostrecent",
)
KAFKA_HANDLER_RETRIES = Counter(
    f"{PREFIX}_kafka_handler_retries_total",
    "Batches retried after a transient failure (database or broker away).",
    ["group"],
)
KAFKA_PUBLISHED = Counter(f"{PREFIX}_kafka_records_published_total", "Records published to Kafka.", ["topic"])
KAFKA_PUBLISH_DROPPED = Counter(
    f"{PREFIX}_kafka_records_dropped_total",
    "Records a background publisher dropped because its buffer was full or the broker refused them.",
    ["topic", "reason"],
)
KAFKA_PUBLISH_QUEUE = Gauge(
    f"{PREFIX}_kafka_publish_queue_records",
    "Records waiting in a background publisher's buffer.",
    ["topic"],
    multiprocess_mode="livesum",  # every worker has its own publisher: the replica waits on all of them
)
KAFKA_POSITIONS_RESET = Counter(
    f"{PREFIX}_kafka_positions_reset_total",
    "Partitions whose consumer stood past the end of the log (the broker lost records) and resumed.",
    ["consumer", "topic"],
)
