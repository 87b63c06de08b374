"""Settings of the federation service (``FEDERATION_*``, plus the platform's ``MLOPS_*`` it shares).

The federation is a component of its own, in its own environment: it reads the same
``MLOPS_*`` names as the services for what is the platform's (the broker, the topic
prefix, the code version) and holds no platform secret, only a scoped registry token.
A bad value stops start-up naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _platform(env: str, default: Any, **kwargs: Any) -> Any:
    return Field(default, validation_alias=f"MLOPS_{env}", **kwargs)


class FederationSettings(BaseSettings):
    """Everything the federation service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="FEDERATION_", extra="ignore", populate_by_name=True, frozen=True
    )

    host: str = "127.0.0.1"
    """Interface the SuperLink listens on: sites connect here (Flower's Fleet API), runs are
    submitted here (its Control API). Both are HTTP(S) on one port."""

    port: int = Field(8084, ge=0, le=65535)
    """The SuperLink's port."""

    workdir: Path = Path(".mlops/federation")
    """Where runs keep their status, receipts and results (one directory per run)."""

    registry_url: str = "http://127.0.0.1:8080"
    """The registry's REST API (``REGISTRY_HTTP_PORT``)."""

    token: SecretStr = Field(min_length=1)
    """A bearer token with the read and write scopes on the registry (required); never logged."""

    ssl_certfile: Path | None = None
    """The SuperLink's TLS certificate (PEM); with ``ssl_keyfile`` and ``ssl_ca_certfile``."""

    ssl_keyfile: Path | None = None
    """The SuperLink's TLS private key (PEM)."""

    ssl_ca_certfile: Path | None = None
    """The CA that signed the certificate (sites verify the SuperLink with it)."""

    insecure: bool = False
    """Run the SuperLink without TLS. Off by default: a federation without certificates
    refuses to start unless this says it should (loopback demos and tests)."""

    train_requests: bool = True
    """Consume ``<prefix>.train.requests`` and run the federation for requests whose spec is
    federated (a drift's retrain included), answering on ``<prefix>.train.results``."""

    kafka_bootstrap_servers: str = _platform("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    """Kafka bootstrap servers, comma-separated host:port pairs."""

    topic_prefix: str = _platform("TOPIC_PREFIX", "mlops", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
    """Prefix of the platform's topic names."""

    code_version: str = _platform("CODE_VERSION", "dev")
    """Version of the running code, recorded in lineage."""

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> FederationSettings:
        files = (self.ssl_certfile, self.ssl_keyfile, self.ssl_ca_certfile)
        if any(files) and not all(files):
            raise ValueError("FEDERATION_SSL_CERTFILE, _KEYFILE and _CA_CERTFILE go together")
        if not any(files) and not self.insecure:
            raise ValueError(
                "FEDERATION_SSL_CERTFILE/_KEYFILE/_CA_CERTFILE are unset: give the SuperLink a certificate, "
                "or set FEDERATION_INSECURE=true to run without TLS (loopback only)"
            )
        return self
