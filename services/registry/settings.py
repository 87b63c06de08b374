"""Settings of the registry service (``REGISTRY_*``; platform fields from ``MLOPS_*``)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.auth import SigningKey
from services.common.settings import ServiceSettings

MiB = 1024 * 1024


class RegistrySettings(ServiceSettings):
    """Where the registry listens and the limits it enforces."""

    model_config = SettingsConfigDict(
        env_prefix="REGISTRY_", extra="ignore", populate_by_name=True, frozen=True
    )

    host: str = "127.0.0.1"
    """Interface both servers bind to."""

    grpc_port: int = Field(50051, ge=0, le=65535)
    """gRPC port of ``mlops.v1.RegistryService`` (0: any free port)."""

    http_port: int = Field(8080, ge=0, le=65535)
    """Port of the REST mirror, its OpenAPI document, health and metrics (0: any free port)."""

    artifact_chunk_bytes: int = Field(1 * MiB, ge=16 * 1024, le=4 * MiB)
    """Size of the chunks artifacts are streamed and stored in."""

    max_artifact_bytes: int = Field(512 * MiB, ge=1)
    """Largest artifact accepted; a larger declared or streamed size is refused."""

    artifact_keys: SecretStr | None = None
    """Key-encryption keys for artifacts at rest: a JSON object of key id -> base64 of 32
    random bytes (``REGISTRY_ARTIFACT_KEYS_FILE`` reads it from a file). Each artifact is
    stored under its own AES-256-GCM data key wrapped by the active one. Unset: artifacts are
    stored unencrypted (a warning at start). See docs/security.md for rotation."""

    artifact_key_id: str | None = None
    """Id of the key in ``REGISTRY_ARTIFACT_KEYS`` that wraps new data keys (optional with one key)."""

    max_page_size: int = Field(500, ge=1, le=10000)
    """Most items one list or search call returns."""

    default_page_size: int = Field(100, ge=1, le=10000)
    """Items per page when the caller does not say."""

    require_distinct_approver: bool = True
    """Four-eyes rule: whoever registered a version may not approve it themselves."""

    outbox_poll_seconds: float = Field(1.0, gt=0, le=60)
    """How often the relay looks for unsent events written by other replicas or before a crash."""

    outbox_retention_seconds: int = Field(7 * 24 * 3600, ge=60)
    """How long relayed events stay in the outbox (for inspection) before MongoDB expires them."""

    orphan_sweep_seconds: float = Field(3600.0, gt=0)
    """How often to delete artifact bytes left behind by uploads a crash interrupted."""

    orphan_age_seconds: float = Field(3600.0, ge=60)
    """Age after which unreferenced artifact bytes count as left behind (uploads in progress
    are younger)."""

    runs_consumer_group: str = Field("registry-runs", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    """Consumer group on ``<prefix>.train.results`` (prefixed with the topic prefix), from
    which the registry records training runs; replicas share the partitions."""

    transaction_timeout_seconds: float = Field(10.0, gt=0, le=120)
    """Longest a change may take in the database, conflict retries included; past it the call
    fails with UNAVAILABLE (503) and nothing is changed."""

    signing_key: SecretStr | None = None
    """PEM private key (Ed25519 or P-256) the registry signs the tokens it issues with
    (``mlops token keygen`` makes one). Its public half must be in
    ``MLOPS_AUTH_PUBLIC_KEYS`` under ``signing_key_id``. Unset: the registry issues no tokens."""

    signing_key_id: str = Field("", max_length=128)
    """The ``kid`` tokens signed with ``signing_key`` carry (empty: derived from the key, as
    ``mlops token keygen`` prints it). Rotating keys: see docs/access.md."""

    token_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    """Lifetime of a token issued without ``--ttl``: every token expires."""

    max_token_ttl_seconds: int = Field(90 * 24 * 3600, ge=60)
    """Longest lifetime a token may be issued with."""

    audit_retention_seconds: int = Field(365 * 24 * 3600, ge=3600)
    """How long audit records are kept before MongoDB expires them (a TTL index, swept about
    once a minute)."""

    refusal_window_seconds: float = Field(60.0, ge=1, le=3600)
    """Refusals of the same kind by the same caller within this window are one audit record
    with a count (so a flood of refused calls cannot grow the log without bound)."""

    @field_validator("signing_key")
    @classmethod
    def _signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            SigningKey.from_pem(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _ttls(self) -> Self:
        if self.token_ttl_seconds > self.max_token_ttl_seconds:
            raise ValueError("token_ttl_seconds must not exceed max_token_ttl_seconds")
        return self

    def token_signing_key(self) -> SigningKey | None:
        """The key tokens are issued with, under the id verifiers know it by."""
        if self.signing_key is None:
            return None
        return SigningKey.from_pem(self.signing_key.get_secret_value(), kid=self.signing_key_id)

    @model_validator(mode="after")
    def _artifact_keys_usable(self) -> Self:
        """A key ring that cannot work stops start-up, naming the variable (never a key)."""
        # Here, not at the top: the store package imports these settings.
        from services.registry.store.encryption import KeyRing

        KeyRing.from_settings(self.artifact_keys, self.artifact_key_id)
        return self
