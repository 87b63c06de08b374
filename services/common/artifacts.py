"""Model artifacts the platform can trust: addressed by SHA-256, verified on every load,
saved in formats that do not execute code on load.

scikit-learn models are saved with skops and loaded with an explicit list of trusted
types. Formats that can execute code on load (river models are pickled) are accepted
only with an HMAC-SHA256 signature made by the trainer under a key the registry and
serving share, and checked before a single byte is unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
from typing import Any

SKOPS = "skops"
RIVER_HMAC = "river-hmac"
SIGNATURE_HMAC_PARAM = "artifact.signature_hmac"
"""The version parameter holding a river-hmac artifact's HMAC: the registry checks the HMAC
on upload but does not return it, and whoever unpickles the artifact must check it again."""

# Types a platform-trained scikit-learn model may contain beyond skops' own defaults.
# Module prefixes, not single names, so a new estimator family needs no code change;
# anything outside them (os, subprocess, builtins.eval ...) is refused.
TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.")


class ArtifactError(Exception):
    """An artifact that must not be loaded."""


class DigestMismatch(ArtifactError):
    def __init__(self, expected: str, actual: str):
        super().__init__(f"artifact digest mismatch: expected sha256 {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_digest(data: bytes, expected_sha256: str) -> None:
    actual = sha256_hex(data)
    if not hmac.compare_digest(actual, expected_sha256.lower()):
        raise DigestMismatch(expected_sha256, actual)


def dump_sklearn(model: Any) -> bytes:
    import skops.io as sio  # imported on use: it pulls in scikit-learn (seconds), digests need neither

    return bytes(sio.dumps(model))


def load_sklearn(data: bytes, expected_sha256: str) -> Any:
    """Load a skops artifact after checking its digest and every type it would build."""
    import skops.io as sio  # imported on use: it pulls in scikit-learn (seconds), digests need neither

    verify_digest(data, expected_sha256)
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ArtifactError(f"not a skops artifact: {exc}") from None
    refused = [name for name in untrusted if not name.startswith(TRUSTED_TYPE_PREFIXES)]
    if refused:
        raise ArtifactError(f"artifact contains types outside the trusted list: {', '.join(sorted(refused))}")
    return sio.loads(data, trusted=untrusted)


def sign(data: bytes, key: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def dump_signed_pickle(model: Any, key: bytes) -> tuple[bytes, str]:
    """Pickle ``model`` (for river models, which have no code-free format) and sign it."""
    data = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    return data, sign(data, key)


def load_signed_pickle(data: bytes, expected_sha256: str, signature: str, key: bytes) -> Any:
    """Unpickle only bytes whose digest and HMAC both check out."""
    verify_digest(data, expected_sha256)
    if not signature or not hmac.compare_digest(sign(data, key), signature.lower()):
        raise ArtifactError("artifact signature does not verify: refusing to unpickle it")
    return pickle.load(io.BytesIO(data))
