"""Who may call the platform: scoped, team-bound bearer tokens, checked the same way on gRPC
and HTTP in every service.

- :mod:`.principal`: scopes, teams, and the principal a verified token stands for.
- :mod:`.keys`: signing keys and the public key set (JWKS) verifiers trust, by key id.
- :mod:`.tokens`: minting tokens (the registry, and each service for its own calls) and
  verifying them (signature, issuer, expiry, revocation, scope).
- :mod:`.oidc`: tokens of an external OpenID Connect provider, mapped to teams and scopes.
- :mod:`.revocation`: the revoked-token list every service checks, kept in step with the
  registry.
- :mod:`.interceptor`: the gRPC server interceptor and call metadata.

There is no default key and no default token: the local stack generates its keys,
docker-compose and Kubernetes refuse to start without them.
"""

from services.common.auth.interceptor import (
    PUBLIC_GRPC_PREFIXES,
    AuthInterceptor,
    DenialHook,
    MethodScopes,
    bearer_metadata,
    current_principal,
    current_request_id,
)
from services.common.auth.keys import SERVICE_KEY_PREFIX, InvalidKey, KeySet, SigningKey, jwks_json
from services.common.auth.principal import (
    ALL_TEAMS,
    DEFAULT_TEAM,
    TEAM_NAME,
    Principal,
    Scope,
    check_team_name,
    parse_scopes,
)
from services.common.auth.revocation import Revocation, RevocationList, RevocationPoller
from services.common.auth.tokens import (
    ISSUER,
    SERVICE_SCOPES,
    AuthError,
    MintedToken,
    PlatformKeys,
    ServiceCredentials,
    TokenIssuer,
    TokenVerifier,
    denial,
)

__all__ = [
    "ALL_TEAMS",
    "DEFAULT_TEAM",
    "ISSUER",
    "PUBLIC_GRPC_PREFIXES",
    "SERVICE_KEY_PREFIX",
    "SERVICE_SCOPES",
    "TEAM_NAME",
    "AuthError",
    "AuthInterceptor",
    "DenialHook",
    "InvalidKey",
    "KeySet",
    "MethodScopes",
    "MintedToken",
    "PlatformKeys",
    "Principal",
    "Revocation",
    "RevocationList",
    "RevocationPoller",
    "Scope",
    "ServiceCredentials",
    "SigningKey",
    "TokenIssuer",
    "TokenVerifier",
    "bearer_metadata",
    "check_team_name",
    "current_principal",
    "current_request_id",
    "denial",
    "jwks_json",
    "parse_scopes",
]
