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

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from services.common.auth import KeySet, SigningKey
from services.common.auth.oidc import GroupGrant, OidcProvider


def platform_field(env: str, default: Any = ..., **kwargs: Any) -> Any:
    """A field read from ``MLOPS_<ENV>`` whatever the service's own prefix is."""
    return Field(default, validation_alias=f"MLOPS_{env}", **kwargs)


def variable_name(settings_class: type[BaseSettings], name: str) -> str:
    """The environment variable field ``name`` of ``settings_class`` is read from."""
    alias = settings_class.model_fields[name].validation_alias
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    return alias if isinstance(alias, str) else f"{prefix}{name}".upper()


class FileVariables(PydanticBaseSettingsSource):
    """Every setting also from a file: ``<VARIABLE>_FILE`` names a file holding the value
    (surrounding white space dropped), the way compose and Kubernetes mount secrets. The
    variable itself wins when both are set; an unreadable file stops start-up naming it."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ answers for every field at once

    def __call__(self) -> dict[str, Any]:
        environment = {key.upper(): value for key, value in os.environ.items()}
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            variable = variable_name(self.settings_cls, name)
            path = environment.get(f"{variable}_FILE")
            if not path or variable in environment:
                continue
            try:
                text = Path(path).read_text().strip()
            except OSError as exc:
                raise ValueError(f"{variable}_FILE: cannot read {path}: {exc.strerror}") from None
            # As the variable itself would be read: a list or a mapping is JSON.
            values[name] = self.prepare_field_value(name, field, text, value_is_complex=False)
        return values


class PlatformSettings(BaseSettings):
    """What every component reads from ``MLOPS_*`` environment variables (or, for each,
    from the file ``<VARIABLE>_FILE`` names: see :class:`FileVariables`)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, FileVariables(settings_cls), dotenv_settings, file_secret_settings

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

    tls_enabled: bool = platform_field("TLS", False)
    """TLS on every gRPC and HTTP hop: servers listen with TLS only (plaintext is refused),
    clients connect with TLS only (see docs/security.md)."""

    tls_cert_file: Path | None = platform_field("TLS_CERT_FILE", None)
    """PEM certificate (chain) this component serves with; also its client certificate under
    mutual TLS. Renewed files are picked up without a restart."""

    tls_key_file: Path | None = platform_field("TLS_KEY_FILE", None)
    """PEM private key of ``MLOPS_TLS_CERT_FILE``."""

    tls_ca_file: Path | None = platform_field("TLS_CA_FILE", None)
    """PEM CA bundle that clients verify servers with (the system's roots when unset) and,
    under mutual TLS, servers verify clients with."""

    tls_client_auth: bool = platform_field("TLS_CLIENT_AUTH", False)
    """Mutual TLS: gRPC servers require a client certificate from ``MLOPS_TLS_CA_FILE``'s CA
    (HTTP servers verify one when presented), and clients present this component's own."""

    tls_reload_seconds: float = platform_field("TLS_RELOAD_SECONDS", 60.0, gt=0, le=86400)
    """How often HTTP servers look for a renewed certificate (gRPC servers look at each handshake)."""

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = platform_field(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"
    )
    """How every Kafka client (aiokafka, librdkafka, faust) talks to the brokers."""

    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = platform_field(
        "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"
    )
    """SASL mechanism with ``SASL_*`` protocols. OAUTHBEARER takes its token from
    ``MLOPS_KAFKA_OAUTH_TOKEN_URL`` (OAuth 2 client credentials)."""

    kafka_sasl_username: str | None = platform_field("KAFKA_SASL_USERNAME", None)
    """SASL user (PLAIN and SCRAM)."""

    kafka_sasl_password: SecretStr | None = platform_field("KAFKA_SASL_PASSWORD", None)
    """SASL password (PLAIN and SCRAM); ``MLOPS_KAFKA_SASL_PASSWORD_FILE`` reads it from a file."""

    kafka_oauth_token_url: str | None = platform_field("KAFKA_OAUTH_TOKEN_URL", None)
    """OAUTHBEARER: the identity provider's token endpoint (client-credentials grant)."""

    kafka_oauth_client_id: str | None = platform_field("KAFKA_OAUTH_CLIENT_ID", None)
    """OAUTHBEARER: this platform's client id at the identity provider."""

    kafka_oauth_client_secret: SecretStr | None = platform_field("KAFKA_OAUTH_CLIENT_SECRET", None)
    """OAUTHBEARER: the client secret (``MLOPS_KAFKA_OAUTH_CLIENT_SECRET_FILE`` from a file)."""

    kafka_oauth_scope: str | None = platform_field("KAFKA_OAUTH_SCOPE", None)
    """OAUTHBEARER: scope requested with the token, if the provider needs one."""

    kafka_ssl_ca_file: Path | None = platform_field("KAFKA_SSL_CA_FILE", None)
    """PEM CA bundle the brokers' certificates are verified with (the system's roots when unset)."""

    kafka_ssl_cert_file: Path | None = platform_field("KAFKA_SSL_CERT_FILE", None)
    """PEM client certificate for brokers that authenticate clients by certificate (mutual TLS)."""

    kafka_ssl_key_file: Path | None = platform_field("KAFKA_SSL_KEY_FILE", None)
    """PEM private key of ``MLOPS_KAFKA_SSL_CERT_FILE``."""

    kafka_ssl_check_hostname: bool = platform_field("KAFKA_SSL_CHECK_HOSTNAME", True)
    """Verify that a broker's certificate names the host connected to."""


class ServiceSettings(PlatformSettings):
    """The platform-wide settings of the back-end services: :class:`PlatformSettings`, the
    database, and the keys."""

    datasets_address: str = platform_field("DATASETS_ADDRESS", "127.0.0.1:50052")
    """gRPC address of ingest's dataset API, for the services that read training data."""

    mongodb_uri: SecretStr = platform_field("MONGODB_URI", SecretStr("mongodb://127.0.0.1:27017"))
    """MongoDB connection string; may hold credentials, so it is never logged."""

    mongodb_database: str = platform_field("MONGODB_DATABASE", "mlops")
    """Database that holds this platform's collections."""

    mongodb_tls_ca_file: Path | None = platform_field("MONGODB_TLS_CA_FILE", None)
    """PEM CA bundle the database's certificate is verified with; setting it (or the next)
    turns TLS on for the database connection (as ``tls=true`` in the URI would)."""

    mongodb_tls_certificate_key_file: Path | None = platform_field("MONGODB_TLS_CERTIFICATE_KEY_FILE", None)
    """PEM file holding this client's certificate and key, for databases that authenticate
    clients by certificate (X.509)."""

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
    tokens it signs are accepted for ``service:`` subjects with read, write and predict only.
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
