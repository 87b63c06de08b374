"""Token keys for tests: one set per session, trusted by every service under test."""

from __future__ import annotations

from typing import TypedDict

from services.common.auth import KeySet, PlatformKeys, TokenVerifier


class KeySettings(TypedDict):
    """The platform's key settings, by their settings-class field names."""

    auth_public_keys: str
    service_key: str


class Keys(PlatformKeys):
    """Test keys with the platform's key settings as settings-class values too."""

    def settings(self) -> KeySettings:
        return {"auth_public_keys": self.public_keys, "service_key": self.service.private_pem()}

    def verifier(self) -> TokenVerifier:
        """A verifier that trusts these keys and nothing else (no revocation list)."""
        return TokenVerifier(KeySet.from_json(self.public_keys))


KEYS = Keys()
"""The keys of settings that only need to be valid (unit tests)."""
