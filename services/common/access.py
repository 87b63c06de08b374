"""How a service checks its callers and presents itself to the services it calls.

:class:`PlatformAccess` puts together, from the platform settings, what every service
needs: the token verifier (the platform's public keys, the single sign-on provider, and
the revocation list, kept in step with the registry every ``MLOPS_REVOCATION_POLL_SECONDS``)
and the service's own credentials (signed with ``MLOPS_SERVICE_KEY``)::

    access = PlatformAccess(settings, "serving")
    registry = RegistryClient(settings.registry_address, access.credentials(Scope.READ))
    await access.start()            # the revocation list follows the registry from now on
    ...                             # access.verifier checks every call
    await access.stop()

The registry keeps its own list from its database instead (``start(source=...)``).
"""

from __future__ import annotations

from services.common.auth import (
    RevocationList,
    RevocationPoller,
    Scope,
    ServiceCredentials,
    SigningKey,
    TokenVerifier,
)
from services.common.auth.revocation import RevocationSource
from services.common.clients.access import AccessClient
from services.common.settings import ServiceSettings
from services.common.tls import client_tls


class PlatformAccess:
    """The verifier of a service's callers and the service's own credentials."""

    def __init__(self, settings: ServiceSettings, service: str):
        self._settings = settings
        self._service = service
        self.revocations = RevocationList()
        self.verifier = TokenVerifier(
            settings.public_keys, revocations=self.revocations, external=settings.oidc_provider()
        )
        self._key = settings.service_signing_key()
        if self._key is not None and self._key.kid not in settings.public_keys:
            raise ValueError(
                f"MLOPS_SERVICE_KEY: its public key (kid {self._key.kid!r}) is not in MLOPS_AUTH_PUBLIC_KEYS, "
                "so no service would accept this service's calls"
            )
        self._poller: RevocationPoller | None = None
        self._client: AccessClient | None = None

    def credentials(self, *scopes: Scope) -> ServiceCredentials:
        """This service's credentials for calls needing ``scopes``."""
        return ServiceCredentials(self._service_key(), self._service, scopes)

    def _service_key(self) -> SigningKey:
        if self._key is None:
            raise ValueError(f"MLOPS_SERVICE_KEY: {self._service} needs it to call the registry")
        return self._key

    async def start(self, source: RevocationSource | None = None) -> None:
        """Keep the revocation list in step with ``source``, by default the registry's
        ``ListRevokedTokens`` (with this service's read credentials)."""
        if source is None:
            self._client = AccessClient(
                self._settings.registry_address, self.credentials(Scope.READ), tls=client_tls(self._settings)
            )
            source = self._client.revocations
        self._poller = RevocationPoller(source, self.revocations, self._settings.revocation_poll_seconds)
        self._poller.start()

    async def stop(self) -> None:
        if self._poller is not None:
            await self._poller.stop()
        if self._client is not None:
            await self._client.close()
