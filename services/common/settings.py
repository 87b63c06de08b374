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

from functools import cached_property
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.auth import KeySet, SigningKey
from services.common.auth.oidc import GroupGrant, OidcProvider


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

    auth_public_keys: str = platform_field("AUTH_PUBLIC_KEYS")
    """The public keys bearer tokens are verified with: a JSON Web Key Set
    (``{"keys": [...]}``) of Ed25519 (EdDSA) or P-256 (ES256) keys, each with its ``kid``.
    It holds the registry's token-signing key (and, while a rotation is under way, the one
    before it) and the deployment's service key (a ``kid`` starting ``service-``). Required:
    there is no default credential. Private keys are refused here."""

    service_key: SecretStr | None = platform_field("SERVICE_KEY", None)
    """PEM private key (Ed25519 or P-256) this service signs its own credentials with when it
    calls another service (and the registry for the revocation list). One per deployment,
    its public half in ``MLOPS_AUTH_PUBLIC_KEYS`` under a ``kid`` starting ``service-``;
    tokens it signs are accepted for ``service:`` subjects with read and write only.
    Required by every service but the registry."""

    revocation_poll_seconds: float = platform_field("REVOCATION_POLL_SECONDS", 2.0, gt=0, le=60)
    """How often each service reads the revoked-token list from the registry: a revoked
    token is refused everywhere at most this long (plus one call) after its revocation."""

    oidc_issuer: str = platform_field("OIDC_ISSUER", "", max_length=512)
    """Single sign-on: the ``iss`` of the OpenID Connect provider whose tokens are accepted
    (empty: none)."""

    oidc_audience: str = platform_field("OIDC_AUDIENCE", "", max_length=512)
    """The ``aud`` the provider's tokens must be meant for (the client id registered there)."""

    oidc_jwks_url: str = platform_field("OIDC_JWKS_URL", "", max_length=2048)
    """Where the provider publishes its signing keys (the ``jwks_uri`` of its discovery
    document); fetched on first use and cached."""

    oidc_jwks_cache_seconds: float = platform_field("OIDC_JWKS_CACHE_SECONDS", 300.0, ge=10, le=86400)
    """How long the provider's keys are kept before they are fetched again (a token naming
    an unknown key id fetches them at once, at most once every 30 seconds)."""

    oidc_subject_claim: str = platform_field("OIDC_SUBJECT_CLAIM", "sub", min_length=1)
    """The claim naming the person, as the audit log shows them (``sub``, ``email`` ...)."""

    oidc_groups_claim: str = platform_field("OIDC_GROUPS_CLAIM", "groups", min_length=1)
    """The claim (a dotted path, such as ``realm_access.roles``) listing the person's groups."""

    oidc_group_grants: dict[str, GroupGrant] = platform_field("OIDC_GROUP_GRANTS", default_factory=dict)
    """JSON mapping a provider group to what it grants: ``{"ml-alpha": {"team": "alpha",
    "scopes": ["read", "write"]}, "ml-admins": {"scopes": ["admin"]}}``. Groups not listed
    grant nothing; a token with no listed group is refused."""

    artifact_signing_key: SecretStr | None = platform_field("ARTIFACT_SIGNING_KEY", None, min_length=32)
    """HMAC key for artifacts in formats that can run code on load (river models): the trainer
    signs with it, the registry and serving refuse anything it does not verify. Unset: such
    artifacts are refused outright."""

    @field_validator("auth_public_keys")
    @classmethod
    def _key_set(cls, value: str) -> str:
        KeySet.from_json(value)
        return value

    @field_validator("service_key")
    @classmethod
    def _service_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            SigningKey.from_pem(value.get_secret_value(), service=True)
        return value

    @model_validator(mode="after")
    def _oidc_complete(self) -> ServiceSettings:
        if self.oidc_issuer and not (self.oidc_audience and self.oidc_jwks_url):
            raise ValueError("MLOPS_OIDC_ISSUER needs MLOPS_OIDC_AUDIENCE and MLOPS_OIDC_JWKS_URL too")
        return self

    @cached_property
    def public_keys(self) -> KeySet:
        return KeySet.from_json(self.auth_public_keys)

    def service_signing_key(self) -> SigningKey | None:
        """The service key, with the id its public half has in the key set."""
        if self.service_key is None:
            return None
        return SigningKey.from_pem(self.service_key.get_secret_value(), service=True)

    def oidc_provider(self) -> OidcProvider | None:
        """The single sign-on provider, if one is configured."""
        if not self.oidc_issuer:
            return None
        return OidcProvider(
            self.oidc_issuer,
            self.oidc_audience,
            self.oidc_jwks_url,
            self.oidc_group_grants,
            subject_claim=self.oidc_subject_claim,
            groups_claim=self.oidc_groups_claim,
            cache_seconds=self.oidc_jwks_cache_seconds,
        )
