"""Model artifacts the platform can trust: addressed by SHA-256, verified on every load.

What each artifact format is, and how its bytes are saved, verified and loaded, is its
flavor's (:mod:`services.common.flavors`). Here are the checks every format shares: the
digest that addresses an artifact, and the HMAC that signs formats which could run code
on load, made by the trainer under a key the registry and serving share.
"""

from __future__ import annotations

import hashlib
import hmac


class ArtifactError(Exception):
    """An artifact that must not be loaded; the message says why."""


class DigestMismatch(ArtifactError):
    def __init__(self, expected: str, actual: str):
        super().__init__(f"artifact digest mismatch: expected sha256 {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class SignatureMismatch(ArtifactError):
    """A signed artifact whose HMAC is missing or does not verify under the platform's key."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_digest(data: bytes, expected_sha256: str) -> None:
    actual = sha256_hex(data)
    if not hmac.compare_digest(actual, expected_sha256.lower()):
        raise DigestMismatch(expected_sha256, actual)


def sign(data: bytes, key: bytes) -> str:
    """The HMAC-SHA256 (hex) of ``data`` under ``key``."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def verify_signature(data: bytes, signature: str, key: bytes | None) -> None:
    """Raise :class:`SignatureMismatch` unless ``signature`` is the HMAC of ``data`` under ``key``."""
    if key is None:
        raise SignatureMismatch(
            "signed artifacts are verified with the platform's MLOPS_ARTIFACT_SIGNING_KEY, and none is set here"
        )
    if not signature:
        raise SignatureMismatch("the artifact carries no signature to verify")
    if not hmac.compare_digest(sign(data, key), signature.lower()):
        raise SignatureMismatch("the artifact's HMAC does not verify under the platform's signing key")
