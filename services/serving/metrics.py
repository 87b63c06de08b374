"""Serving's Prometheus metrics: requests, latency, batches, queues, shadows and models.

A replica of several workers merges its workers' metrics (:mod:`services.common.metrics`):
each gauge's ``multiprocess_mode`` says how, for the replica.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import PREFIX, shared_directory
from services.serving.batching import BatchObserver
from services.serving.inference import RequestObserver
from services.serving.models import ModelState, ServedModel

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    f"{PREFIX}_serving_requests_total",
    "Inference requests by model, version and gRPC status code.",
    ["model", "version", "code"],
)
REQUEST_SECONDS = Histogram(
    f"{PREFIX}_serving_request_seconds",
    "Time from receiving an inference request to its answer, by model, version and status code.",
    ["model", "version", "code"],
    buckets=_LATENCY_BUCKETS,
)
ROWS = Counter(f"{PREFIX}_serving_rows_total", "Rows predicted, by model and version.", ["model", "version"])
BATCH_ROWS = Histogram(
    f"{PREFIX}_serving_batch_rows",
    "Rows per predict call after micro-batching.",
    ["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
BATCH_REQUESTS = Histogram(
    f"{PREFIX}_serving_batch_requests",
    "Requests sharing one predict call.",
    ["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
BATCH_SECONDS = Histogram(
    f"{PREFIX}_serving_batch_seconds",
    "Time of one predict call.",
    ["model", "version"],
    buckets=_LATENCY_BUCKETS,
)
QUEUE_ROWS = Gauge(
    f"{PREFIX}_serving_queue_rows",
    "Rows waiting for a predict call, by model and version.",
    ["model", "version"],
    multiprocess_mode="livesum",  # each worker has its own batcher: the replica's queue is them all
)
SHADOWS = Counter(
    f"{PREFIX}_serving_shadow_requests_total",
    "Requests mirrored to a shadow version: answered, skipped (candidate busy) or failed.",
    ["model", "outcome"],
)
MODELS = Gauge(
    f"{PREFIX}_serving_models",
    "Models known to this replica, by state (with several workers: the most any worker has in it).",
    ["state"],
    # Every worker loads every model. One that cannot serve a model fails the connections the
    # kernel hands it, so LOADING and UNAVAILABLE show the worst worker; READY the best.
    multiprocess_mode="livemax",
)
PRODUCTION_FALLBACK = Gauge(
    f"{PREFIX}_serving_production_fallback",
    "The production version a model cannot serve while an earlier version answers for it (0: none).",
    ["model"],
    # Workers agree on the production version; one in fallback answers some requests with the
    # earlier version, so the replica is in fallback when any worker is.
    multiprocess_mode="livemax",
)
_fallbacks: set[str] = set()


class ServingMetrics(RequestObserver):
    """Records request outcomes; label children are cached, as this runs on every request."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def request(self, model: str, version: str, code: str, seconds: float, rows: int) -> None:
        key = (model, version, code)
        children = self._children.get(key)
        if children is None:
            children = (REQUESTS.labels(*key), REQUEST_SECONDS.labels(*key))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def shadow(self, model: str, outcome: str) -> None:
        SHADOWS.labels(model, outcome).inc()

    @staticmethod
    def models(models: Mapping[str, ServedModel]) -> None:
        for state in ModelState:
            MODELS.labels(state.value).set(sum(1 for m in models.values() if m.state is state))
        for name in _fallbacks - set(models):
            if shared_directory() is None:
                PRODUCTION_FALLBACK.remove(name)
            else:  # the library cannot remove a series from the shared files: none it is
                PRODUCTION_FALLBACK.labels(name).set(0)
        _fallbacks.intersection_update(models)
        for name, model in models.items():
            if model.fallback_from or name in _fallbacks:
                PRODUCTION_FALLBACK.labels(name).set(model.fallback_from)
                _fallbacks.add(name)


class BatchMetrics(BatchObserver):
    """Batch sizes, predict time and queue depth of one model version."""

    def __init__(self, model: str, version: int):
        labels = (model, str(version))
        self._rows = ROWS.labels(*labels)
        self._batch_rows = BATCH_ROWS.labels(*labels)
        self._batch_requests = BATCH_REQUESTS.labels(*labels)
        self._batch_seconds = BATCH_SECONDS.labels(*labels)
        self._queue = QUEUE_ROWS.labels(*labels)

    def batch(self, rows: int, requests: int, seconds: float) -> None:
        self._rows.inc(rows)
        self._batch_rows.observe(rows)
        self._batch_requests.observe(requests)
        self._batch_seconds.observe(seconds)

    def queue(self, rows: int) -> None:
        self._queue.set(rows)
