"""Kafka security, once for the three clients the platform uses.

One settings group (``MLOPS_KAFKA_SECURITY_PROTOCOL``, ``MLOPS_KAFKA_SASL_*``,
``MLOPS_KAFKA_OAUTH_*``, ``MLOPS_KAFKA_SSL_*``) becomes one :class:`KafkaSecurity`, which
each client reads in its own vocabulary:

- aiokafka (every producer, consumer loop, tail reader and admin): :meth:`KafkaSecurity.aiokafka`;
- librdkafka (confluent-kafka, serving's prediction log): :meth:`KafkaSecurity.librdkafka`;
- faust (the monitor's stream processing): :meth:`KafkaSecurity.faust_credentials`.

Protocols PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL; SASL mechanisms PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER (an OAuth 2 client-credentials token from the
identity provider's token endpoint: librdkafka fetches it itself, aiokafka and faust through
:class:`OAuthTokenProvider`), on all three clients alike.

Examples
--------
>>> from services.common.settings import PlatformSettings
>>> security = KafkaSecurity.from_settings(PlatformSettings(
...     kafka_security_protocol="SASL_SSL", kafka_sasl_username="mlops", kafka_sasl_password="s3cret"))
>>> options = security.librdkafka()
>>> options["security.protocol"], options["sasl.mechanism"], options["sasl.username"]
('SASL_SSL', 'SCRAM-SHA-512', 'mlops')
>>> security.aiokafka()["sasl_mechanism"]
'SCRAM-SHA-512'
>>> security
KafkaSecurity(protocol='SASL_SSL', mechanism='SCRAM-SHA-512', username='mlops')
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka.abc import AbstractTokenProvider
from pydantic import SecretStr

from services.common.settings import PlatformSettings

SSL_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TOKEN_REFRESH_MARGIN_SECONDS = 60.0
"""A token is fetched again this long before it expires."""


class KafkaSecurityError(ValueError):
    """The Kafka security settings cannot work: the message names the variable."""


@dataclass(frozen=True)
class OAuthClient:
    """Where and as whom OAUTHBEARER tokens are fetched (client-credentials grant)."""

    token_url: str
    client_id: str
    client_secret: SecretStr
    scope: str | None = None


class OAuthTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's (and faust's) OAUTHBEARER token: fetched from the token endpoint with the
    client-credentials grant, kept until shortly before it expires."""

    def __init__(self, client: OAuthClient):
        self._client = client
        self._token = ""
        self._expires = 0.0

    async def token(self) -> str:
        if self._token and time.monotonic() < self._expires - TOKEN_REFRESH_MARGIN_SECONDS:
            return self._token
        form = {"grant_type": "client_credentials"}
        if self._client.scope:
            form["scope"] = self._client.scope
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                self._client.token_url,
                data=form,
                auth=(self._client.client_id, self._client.client_secret.get_secret_value()),
            )
        response.raise_for_status()
        body = response.json()
        self._token = str(body["access_token"])
        self._expires = time.monotonic() + float(body.get("expires_in", 300))
        return self._token


@dataclass(frozen=True)
class KafkaSecurity:
    """How the platform's Kafka clients authenticate and encrypt (PLAINTEXT by default)."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    oauth: OAuthClient | None = field(default=None, repr=False)
    ca_file: Path | None = field(default=None, repr=False)
    cert_file: Path | None = field(default=None, repr=False)
    key_file: Path | None = field(default=None, repr=False)
    check_hostname: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        if not self.sasl:
            return
        if self.mechanism == "OAUTHBEARER":
            if self.oauth is None:
                raise KafkaSecurityError(
                    "MLOPS_KAFKA_OAUTH_TOKEN_URL, MLOPS_KAFKA_OAUTH_CLIENT_ID and "
                    "MLOPS_KAFKA_OAUTH_CLIENT_SECRET are required with OAUTHBEARER"
                )
        elif not self.username or self.password is None:
            raise KafkaSecurityError(
                f"MLOPS_KAFKA_SASL_USERNAME and MLOPS_KAFKA_SASL_PASSWORD are required with {self.mechanism}"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise KafkaSecurityError("MLOPS_KAFKA_SSL_CERT_FILE and MLOPS_KAFKA_SSL_KEY_FILE go together")

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> KafkaSecurity:
        """The settings' Kafka security; raises :class:`KafkaSecurityError` naming what is missing."""
        oauth = None
        if (
            settings.kafka_oauth_token_url
            and settings.kafka_oauth_client_id
            and settings.kafka_oauth_client_secret
        ):
            oauth = OAuthClient(
                settings.kafka_oauth_token_url,
                settings.kafka_oauth_client_id,
                settings.kafka_oauth_client_secret,
                settings.kafka_oauth_scope,
            )
        return cls(
            protocol=settings.kafka_security_protocol,
            mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            oauth=oauth,
            ca_file=settings.kafka_ssl_ca_file,
            cert_file=settings.kafka_ssl_cert_file,
            key_file=settings.kafka_ssl_key_file,
            check_hostname=settings.kafka_ssl_check_hostname,
        )

    @property
    def tls(self) -> bool:
        return self.protocol in SSL_PROTOCOLS

    @property
    def sasl(self) -> bool:
        return self.protocol in SASL_PROTOCOLS

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context aiokafka and faust connect with (None without TLS)."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.check_hostname = self.check_hostname
        if self.cert_file and self.key_file:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``/``AIOKafkaAdminClient``."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            options["sasl_mechanism"] = self.mechanism
            if self.mechanism == "OAUTHBEARER":
                assert self.oauth is not None  # checked in __post_init__
                options["sasl_oauth_token_provider"] = OAuthTokenProvider(self.oauth)
            else:
                assert self.password is not None
                options["sasl_plain_username"] = self.username
                options["sasl_plain_password"] = self.password.get_secret_value()
        return options

    def librdkafka(self) -> dict[str, Any]:
        """Configuration entries for confluent-kafka's ``Producer``/``Consumer``."""
        options: dict[str, Any] = {"security.protocol": self.protocol}
        if self.tls:
            if self.ca_file:
                options["ssl.ca.location"] = str(self.ca_file)
            if self.cert_file and self.key_file:
                options["ssl.certificate.location"] = str(self.cert_file)
                options["ssl.key.location"] = str(self.key_file)
            options["ssl.endpoint.identification.algorithm"] = "https" if self.check_hostname else "none"
        if self.sasl:
            options["sasl.mechanism"] = self.mechanism
            if self.mechanism == "OAUTHBEARER":
                assert self.oauth is not None
                options["sasl.oauthbearer.method"] = "oidc"
                options["sasl.oauthbearer.token.endpoint.url"] = self.oauth.token_url
                options["sasl.oauthbearer.client.id"] = self.oauth.client_id
                options["sasl.oauthbearer.client.secret"] = self.oauth.client_secret.get_secret_value()
                if self.oauth.scope:
                    options["sasl.oauthbearer.scope"] = self.oauth.scope
            else:
                assert self.password is not None
                options["sasl.username"] = self.username
                options["sasl.password"] = self.password.get_secret_value()
        return options

    def faust_credentials(self) -> Any:
        """faust's ``broker_credentials`` (None for PLAINTEXT), which its aiokafka driver
        turns into the same options as :meth:`aiokafka`."""
        from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials

        context = self.ssl_context()
        if not self.sasl:
            return SSLCredentials(context) if context is not None else None
        if self.mechanism == "OAUTHBEARER":
            assert self.oauth is not None
            credentials: Any = OAuthCredentials(oauth_cb=OAuthTokenProvider(self.oauth), ssl_context=context)
        else:
            assert self.password is not None
            credentials = SASLCredentials(
                username=self.username,
                password=self.password.get_secret_value(),
                ssl_context=context,
                mechanism=self.mechanism,
            )
        return credentials


PLAINTEXT = KafkaSecurity()
"""No TLS, no SASL: the embedded broker's default, and every client's when not told otherwise."""
