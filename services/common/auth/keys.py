"""Token keys: the private keys that sign and the public key set (JWKS) that verifies.

Only the token issuer (the registry) holds the platform's signing key; every service
verifies with the public keys in ``MLOPS_AUTH_PUBLIC_KEYS``, a JSON Web Key Set. Each key
has a key id (``kid``) that tokens name in their header, so several keys can be trusted
at once and a new one can take over signing without logging anybody out. Keys are
Ed25519 (``EdDSA``) or P-256 (``ES256``).

A key whose id starts with :data:`SERVICE_KEY_PREFIX` signs service credentials only:
tokens it signs must name a ``service:`` subject and hold no scope beyond
:data:`SERVICE_SCOPES` (see :mod:`.tokens`).

>>> key = SigningKey.generate()
>>> keys = KeySet.from_json(jwks_json([key]))
>>> keys.get(key.kid).algorithm_name
'EdDSA'
>>> SigningKey.from_pem(key.private_pem()).kid == key.kid
True
>>> SigningKey.generate(service=True).kid.startswith(SERVICE_KEY_PREFIX)
True
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

SERVICE_KEY_PREFIX = "service-"
"""Key ids of keys that sign service credentials only."""
ALGORITHMS = ("EdDSA", "ES256")
"""What the platform's own keys may be."""

Algorithm = Literal["EdDSA", "ES256"]
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class InvalidKey(ValueError):
    """A key or key set that cannot be used, saying why."""


def public_jwk(key: PublicKey) -> dict[str, Any]:
    """The public key as a JWK (RFC 7517), without a key id."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return OKPAlgorithm.to_jwk(key, as_dict=True)
    if isinstance(key.curve, ec.SECP256R1):
        return ECAlgorithm.to_jwk(key, as_dict=True)
    raise InvalidKey(f"EC keys must be on P-256 for ES256, not {key.curve.name}")


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The key's RFC 7638 thumbprint (base64url SHA-256 of its required members)."""
    members = ("crv", "kty", "x") if jwk["kty"] == "OKP" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def default_kid(key: PublicKey, *, service: bool = False) -> str:
    """A key id derived from the key itself, so the same key always has the same id."""
    return (SERVICE_KEY_PREFIX if service else "") + thumbprint(public_jwk(key))[:16]


@dataclass(frozen=True)
class SigningKey:
    """A private key and its id: what signs tokens."""

    kid: str
    key: PrivateKey

    @property
    def algorithm(self) -> Algorithm:
        return "EdDSA" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "ES256"

    @property
    def service(self) -> bool:
        return self.kid.startswith(SERVICE_KEY_PREFIX)

    @classmethod
    def generate(cls, algorithm: Algorithm = "EdDSA", *, kid: str = "", service: bool = False) -> SigningKey:
        """A new random key (for the local stack, tests and ``mlops token keygen``)."""
        key: PrivateKey = (
            ed25519.Ed25519PrivateKey.generate()
            if algorithm == "EdDSA"
            else ec.generate_private_key(ec.SECP256R1())
        )
        return cls(kid or default_kid(key.public_key(), service=service), key)

    @classmethod
    def from_pem(cls, pem: str, *, kid: str = "", service: bool = False) -> SigningKey:
        """The key in a PEM text (PKCS #8, unencrypted), with ``kid`` or one derived from it."""
        try:
            key = serialization.load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidKey(f"not an unencrypted PEM private key: {exc}") from None
        if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
            raise InvalidKey(f"EC keys must be on P-256 for ES256, not {key.curve.name}")
        if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise InvalidKey(f"signing keys are Ed25519 or EC P-256, not {type(key).__name__}")
        derived = default_kid(key.public_key(), service=service)
        if service and kid and not kid.startswith(SERVICE_KEY_PREFIX):
            raise InvalidKey(f"a service key's id must start with {SERVICE_KEY_PREFIX!r}")
        return cls(kid or derived, key)

    def private_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK with its id, algorithm and use."""
        return {**public_jwk(self.key.public_key()), "kid": self.kid, "alg": self.algorithm, "use": "sig"}


def jwks_json(keys: Iterable[SigningKey | Mapping[str, Any]]) -> str:
    """A JWKS document of the public halves of ``keys`` (signing keys or public JWKs)."""
    return json.dumps(
        {"keys": [k.public_jwk() if isinstance(k, SigningKey) else dict(k) for k in keys]}, sort_keys=True
    )


class KeySet:
    """The public keys a verifier trusts, by key id (a parsed, checked JWKS)."""

    def __init__(self, keys: Mapping[str, jwt.PyJWK]):
        self._keys = dict(keys)

    @classmethod
    def from_json(cls, text: str) -> KeySet:
        """Parse a JWKS document; :class:`InvalidKey` names the first key that cannot be used.

        A private member (``d``) is refused: verifiers must never hold what signs.
        """
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise InvalidKey(f"not JSON: {exc}") from None
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not entries:
            raise InvalidKey('a JWKS is {"keys": [...]} with at least one key')
        keys: dict[str, jwt.PyJWK] = {}
        for index, entry in enumerate(entries):
            where = f"keys[{index}]"
            if not isinstance(entry, dict):
                raise InvalidKey(f"{where}: not an object")
            kid = entry.get("kid")
            if not isinstance(kid, str) or not kid:
                raise InvalidKey(f"{where}: needs a kid")
            if kid in keys:
                raise InvalidKey(f"{where}: kid {kid!r} appears twice")
            if "d" in entry:
                raise InvalidKey(f"{where}: holds a private key; give verifiers the public key only")
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
                raise InvalidKey(f"{where}: {exc}") from None
            if key.algorithm_name not in ALGORITHMS:
                raise InvalidKey(
                    f"{where}: algorithm {key.algorithm_name} (use one of {', '.join(ALGORITHMS)})"
                )
            keys[kid] = key
        return cls(keys)

    def get(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def kids(self) -> list[str]:
        return sorted(self._keys)
