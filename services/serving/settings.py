"""Settings of the serving service, read from ``SERVING_*`` (and the platform's ``MLOPS_*``)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.aliases import CANDIDATE, PRODUCTION
from services.common.settings import ServiceSettings


class ServingSettings(ServiceSettings):
    """Where serving listens, what it accepts, and how it batches and logs.

    Run it with ``OMP_NUM_THREADS=1``: scikit-learn's OpenMP threads fight the event
    loop and each other for the cores, and tree ensembles get slower per call, not faster.
    """

    model_config = SettingsConfigDict(env_prefix="SERVING_")

    host: str = "127.0.0.1"
    """Interface the gRPC and HTTP servers bind to."""

    grpc_port: int = Field(8001, ge=0, le=65535)
    """Open Inference Protocol over gRPC (0: any free port)."""

    http_port: int = Field(8000, ge=0, le=65535)
    """Open Inference Protocol over HTTP/JSON, health and /metrics (0: any free port)."""

    workers: int = Field(
        default_factory=lambda: len(os.sched_getaffinity(0)),
        ge=1,
        le=256,
        json_schema_extra={"reference_default": "the cores available"},
    )
    """Worker processes of this replica, all on the same ports (SO_REUSEPORT); default: the
    cores this process may run on. Each has its own models, batchers and prediction producer,
    and the kernel spreads connections (not requests: one gRPC channel is one connection)
    over them. 1 serves from this process. See ``services/serving/workers.py``."""

    max_rows: int = Field(4096, ge=1)
    """Most rows one inference request may carry; more is RESOURCE_EXHAUSTED."""

    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest request accepted, in bytes, on gRPC and HTTP; larger is RESOURCE_EXHAUSTED (HTTP 413)."""

    served_aliases: tuple[str, ...] = (PRODUCTION, CANDIDATE)
    """Aliases whose versions are loaded (JSON list in the environment). A model is served while
    it has a ``production`` alias; the others are loaded beside it for canary, shadow and
    explicit alias routing."""

    max_batch_rows: int = Field(256, ge=1)
    """Default largest micro-batch (rows) handed to one predict call; a model's tag
    ``max_batch_rows`` overrides it. 1 turns batching off. Tree ensembles cost about the
    same per call up to a few hundred rows (HistGradientBoosting: 0.7 ms for 1 row, 1.5 ms
    for 256), so four 64-row requests in one call cost half of four calls."""

    max_batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    """Default time the batcher waits for more requests once it has one, while requests
    overlap (an isolated request never waits); a model's tag ``max_batch_wait_ms`` overrides
    it. Under load this doubles the batch sizes gRPC admission alone produces (measured:
    4 to 11 rows at 32 concurrent single-row clients) for about 10% more throughput."""

    max_queue_rows: int = Field(8192, ge=1)
    """Rows allowed to wait for one model version; beyond that requests get RESOURCE_EXHAUSTED
    rather than a growing latency."""

    predict_threads: int = Field(1, ge=1, le=64)
    """Threads that run the predict calls too big to run on the event loop."""

    inline_predict_rows: int = Field(0, ge=0)
    """Batches of at most this many rows are predicted on the event loop instead of a thread.
    0 (the default) sends every batch to a thread: a loop busy predicting admits new calls
    only between predictions, so requests stop meeting in batches."""

    gil_switch_interval_ms: float = Field(0.5, gt=0, le=100)
    """The interpreter's thread switch interval for this process (Python's default is 5 ms).
    A predict thread that released the GIL in native code waits up to this long to get it
    back from a busy event loop, once or more per call; at 5 ms that wait, not the model,
    bounds the predict rate."""

    default_rollout: Literal["none", "canary", "shadow"] = "none"
    """Rollout for a model whose tags do not say: ``none`` (candidate only on request),
    ``canary`` or ``shadow``."""

    default_canary_share: float = Field(0.1, ge=0.0, le=1.0)
    """Share of a model's traffic sent to ``candidate`` under canary when its tags do not say."""

    shadow_max_queue_rows: int = Field(1024, ge=0)
    """Shadow requests are skipped (and counted) while the candidate has this many rows waiting,
    so mirroring never competes with answers for long."""

    prediction_buffer: int = Field(20000, ge=1)
    """Prediction records held while the broker is slow or away; the oldest are dropped
    (and counted in ``mlops_kafka_records_dropped_total``) beyond it."""

    prediction_flush_seconds: float = Field(5.0, ge=0)
    """How long a stopping replica tries to hand buffered prediction records to the broker."""

    prediction_logging: bool = True
    """Publish one PredictionRecord per request to ``<prefix>.predictions``."""

    resync_interval_seconds: float = Field(60.0, gt=0)
    """Full re-read of the served models from the registry, beside the events, so a missed
    event (broker away, replica restarted) is repaired within this time."""

    registry_timeout_seconds: float = Field(30.0, gt=0)
    """Deadline of one registry call (a download included)."""

    startup_timeout_seconds: float = Field(30.0, gt=0)
    """How long ``start()`` waits for the first load of the served models before it returns
    not-ready and keeps retrying in the background."""

    retained_versions: int = Field(2, ge=0, le=32)
    """Versions kept in memory per model after they stop being served, so a rollback to one of
    them swaps at once, without a download."""

    kafka_inference: bool = True
    """Answer Open Inference Protocol requests from ``<prefix>.inference.requests`` on
    ``<prefix>.inference.responses`` (docs/serving.md). Whoever may write the requests topic
    may predict: restrict it with the broker's ACLs as you would the predict scope."""

    kafka_inference_group: str = Field("mlops-serving-inference", min_length=1)
    """Consumer group of the Kafka inference consumers: the replicas share its partitions."""

    kafka_inference_max_batch: int = Field(256, ge=1, le=10000)
    """Request records handled together; they run concurrently and meet in the batcher."""

    kafka_inference_fetch_wait_ms: int = Field(10, ge=0, le=500)
    """How long a fetch waits for requests on a quiet partition. Low, because the embedded
    broker holds every fetch on a quiet partition for this long: latency, not throughput."""
