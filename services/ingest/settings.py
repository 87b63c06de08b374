"""Settings of the ingest service (``INGEST_*``; platform fields from ``MLOPS_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings

KiB = 1024
MiB = 1024 * KiB


class IngestSettings(ServiceSettings):
    """Where ingest listens, how it batches, and the limits it puts on events."""

    model_config = SettingsConfigDict(
        env_prefix="INGEST_", extra="ignore", populate_by_name=True, frozen=True
    )

    host: str = "127.0.0.1"
    """Interface both servers bind to."""

    http_port: int = Field(8081, ge=0, le=65535)
    """Port of the batch endpoint, health and metrics (0: any free port)."""

    grpc_port: int = Field(50052, ge=0, le=65535)
    """Port of ``mlops.v1.DatasetService`` (0: any free port)."""

    pseudonymization_key: SecretStr | None = Field(None, min_length=32)
    """HMAC-SHA256 key that pseudonymizes fields marked private. There is no default:
    without it, schemas with private fields are refused and their events dead-lettered
    with the private values removed. Never stored with the data."""

    pseudonymization_key_version: str = Field("1", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    """Names the key in every pseudonym (``<version>:<hex>``), so a rotated key is visible
    in the data rather than silently producing different values for the same input."""

    consumer_group: str = Field("ingest", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    """Consumer group on the raw topic (prefixed with the topic prefix); every replica
    in the group shares the partitions."""

    consumer_batch_size: int = Field(1000, ge=1, le=20000)
    """Most raw events validated, stored and published as one batch (one bulk write)."""

    store_batch_size: int = Field(250, ge=1, le=20000)
    """Rows per bulk insert. A consumed batch is stored in several, one after the other, so
    validating the next rows and publishing the last ones overlap the database's work."""

    fetch_max_wait_ms: int = Field(50, ge=0, le=5000)
    """How long the broker may hold a fetch while a partition has no new data."""

    max_event_bytes: int = Field(64 * KiB, ge=256, le=8 * MiB)
    """Largest event accepted, as encoded; larger ones are refused as ``oversize``."""

    max_clock_skew_seconds: float = Field(3600.0, ge=0)
    """How far in the future an event's timestamp may be before it is refused."""

    http_max_events: int = Field(5000, ge=1, le=100000)
    """Most events in one HTTP batch; a larger batch is refused whole with 413."""

    http_max_body_bytes: int = Field(16 * MiB, ge=KiB, le=512 * MiB)
    """Largest HTTP batch body; a larger one is refused whole with 413 before it is read in full."""

    window_chunk_rows: int = Field(1000, ge=1, le=50000)
    """Rows per streamed window message when the caller does not say."""

    window_max_chunk_rows: int = Field(10000, ge=1, le=100000)
    """Most rows per streamed window message a caller may ask for."""

    schema_cache_seconds: float = Field(2.0, ge=0, le=300)
    """How long the consumer trusts its copy of a dataset's latest schema before re-reading
    it, so a version registered through another replica takes effect within this delay."""

    pending_label_seconds: int = Field(7 * 24 * 3600, ge=60)
    """How long a label whose event has not arrived yet is kept, waiting for the event."""
