"""Settings shared by every component.

Each service declares one settings class with its own environment prefix (``SERVING_``,
``REGISTRY_`` ...). The fields below are the platform-wide ones; they read the same
``MLOPS_*`` variables everywhere, so an operator sets the broker or the database once.

:class:`PlatformSettings` is what every component reads (the broker, the addresses of the
services it calls, logging). :class:`ServiceSettings` adds what the five back-end services
hold: the database and the keys that sign and verify tokens and artifacts. A component that
acts only with its users' own tokens (the console) derives from :class:`PlatformSettings`
and so never holds a key that could mint one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def platform_field(env: str, default: Any = ..., **kwargs: Any) -> Any:
    """A field read from ``MLOPS_<ENV>`` whatever the service's own prefix is."""
    return Field(default, validation_alias=f"MLOPS_{env}", **kwargs)


class PlatformSettings(BaseSettings):
    """What every component reads from ``MLOPS_*`` environment variables."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    kafka_bootstrap_servers: str = platform_field("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    """Kafka bootstrap servers, comma-separated host:port pairs."""

    topic_prefix: str = platform_field("TOPIC_PREFIX", "mlops", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
    """Prefix of every topic name: ``<prefix>.predictions`` and so on."""

    registry_address: str = platform_field("REGISTRY_ADDRESS", "127.0.0.1:50051")
    """gRPC address of the registry, for the services that call it."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = platform_field("LOG_LEVEL", "INFO")
    """Lowest level of log lines written."""

    log_format: Literal["json", "console"] = platform_field("LOG_FORMAT", "json")
    """``json`` for machines (one object per line), ``console`` for people."""

    code_version: str = platform_field("CODE_VERSION", "dev")
    """Version of the running code (a git commit in images), recorded in lineage."""


class ServiceSettings(PlatformSettings):
    """The platform-wide settings of the back-end services: :class:`PlatformSettings`, the
    database, and the keys."""

    datasets_address: str = platform_field("DATASETS_ADDRESS", "127.0.0.1:50052")
    """gRPC address of ingest's dataset API, for the services that read training data."""

    mongodb_uri: SecretStr = platform_field("MONGODB_URI", SecretStr("mongodb://127.0.0.1:27017"))
    """MongoDB connection string; may hold credentials, so it is never logged."""

    mongodb_database: str = platform_field("MONGODB_DATABASE", "mlops")
    """Database that holds this platform's collections."""

    auth_secret: SecretStr = platform_field("AUTH_SECRET", min_length=32)
    """Key that signs and verifies bearer tokens (HS256). Required: there is no default credential."""

    artifact_signing_key: SecretStr | None = platform_field("ARTIFACT_SIGNING_KEY", None, min_length=32)
    """HMAC key for artifacts in formats that can run code on load (river models): the trainer
    signs with it, the registry and serving refuse anything it does not verify. Unset: such
    artifacts are refused outright."""
