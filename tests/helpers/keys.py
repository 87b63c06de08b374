"""Token keys for tests: one set per session, trusted by every service under test."""

from __future__ import annotations

from services.common.auth import KeySet, PlatformKeys, TokenVerifier


class Keys(PlatformKeys):
    """Test keys with the platform's key settings as settings-class values too."""

    def settings(self) -> dict[str, str]:
        return {"auth_public_keys": self.public_keys, "service_key": self.service.private_pem()}

    def verifier(self) -> TokenVerifier:
        """A verifier that trusts these keys and nothing else (no revocation list)."""
        return TokenVerifier(KeySet.from_json(self.public_keys))


KEYS = Keys()
"""The keys of settings that only need to be valid (unit tests)."""
