"""Envelope encryption of artifacts at rest (AES-256-GCM, ``cryptography``).

Every artifact gets its own random 256-bit *data key*. Its bytes are sealed record by
record with that key, and the data key is stored beside the artifact *wrapped* (itself
sealed) by a *key-encryption key* named by a key id. The key-encryption keys live only in
the registry's settings (``REGISTRY_ARTIFACT_KEYS``), never in the database, so a copy of
the database or a backup holds no readable model.

Rotating a key-encryption key re-wraps the data keys (32 bytes each) and leaves the
artifacts' bytes as they are: :meth:`KeyRing.rewrap`, run by ``mlops keys rotate``
(docs/security.md has the procedure).

The artifact's SHA-256 stays the digest of its plaintext: clients, lineage and serving's
verification see the same digest with or without encryption, and a download is decrypted,
authenticated record by record, and then verified against it.

Record layout: the plaintext is cut into records of ``record_bytes`` (the registry's chunk
size when the artifact was stored); record *i* is ``AES-GCM(data key, nonce = i as 12
big-endian bytes, associated data = digest + last-record flag)``. Nonces never repeat
under a data key (one key per artifact, one index per record), the digest binds every
record to its artifact, and the flag makes a truncation detectable: the last record is
always shorter than ``record_bytes`` (empty when the plaintext fills the records exactly).

Examples
--------
>>> import os
>>> ring = KeyRing({"k1": os.urandom(32)}, active="k1")
>>> sealer, wrapped = ring.seal("ab" * 32, record_bytes=4)
>>> stored = b"".join([*sealer.add(b"model bytes"), sealer.finish()])
>>> b"model" in stored
False
>>> opener = ring.open(wrapped, "ab" * 32)
>>> b"".join(opener.records(stored))
b'model bytes'
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

ALGORITHM = "AES-256-GCM"
KEY_BYTES = 32
TAG_BYTES = 16
NONCE_BYTES = 12


class KeyConfigError(ValueError):
    """The key settings cannot work: the message names the variable."""


class UnknownKey(LookupError):
    """An artifact's data key is wrapped by a key id this registry was not given."""


class Tampered(ValueError):
    """Sealed bytes failed authentication: changed, reordered, truncated, or another artifact's."""


@dataclass(frozen=True)
class WrappedKey:
    """A data key sealed by the key-encryption key ``key_id`` (nonce, then ciphertext)."""

    key_id: str
    sealed: bytes
    record_bytes: int

    def to_document(self) -> dict[str, Any]:
        return {
            "algorithm": ALGORITHM,
            "key_id": self.key_id,
            "wrapped_key": self.sealed,
            "record_bytes": self.record_bytes,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> WrappedKey:
        if document.get("algorithm") != ALGORITHM:
            raise Tampered(f"unknown artifact encryption {document.get('algorithm')!r}")
        return cls(str(document["key_id"]), bytes(document["wrapped_key"]), int(document["record_bytes"]))


def _nonce(index: int) -> bytes:
    return index.to_bytes(NONCE_BYTES, "big")


def _associated(sha256: str, last: bool) -> bytes:
    return sha256.encode() + (b"\x01" if last else b"\x00")


class RecordSealer:
    """Cuts plaintext into records and seals each one (:meth:`add` as bytes arrive, then :meth:`finish`)."""

    def __init__(self, data_key: bytes, sha256: str, record_bytes: int):
        self._aead = AESGCM(data_key)
        self._sha256 = sha256
        self._record_bytes = record_bytes
        self._pending = bytearray()
        self._index = 0

    def _seal(self, plaintext: bytes, last: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._index), plaintext, _associated(self._sha256, last))
        self._index += 1
        return sealed

    def add(self, data: bytes) -> list[bytes]:
        """The records ``data`` completes, sealed (a record is held back until it is full
        and another byte follows, so the last one is known to be last)."""
        self._pending += data
        sealed = []
        while len(self._pending) > self._record_bytes:
            sealed.append(self._seal(bytes(self._pending[: self._record_bytes]), last=False))
            del self._pending[: self._record_bytes]
        return sealed

    def finish(self) -> bytes:
        """The last record, sealed as last: shorter than a full one (empty when the plaintext
        ended on a record boundary, so that truncation at a boundary is detected too)."""
        tail = bytes(self._pending)
        self._pending.clear()
        if len(tail) == self._record_bytes:
            return self._seal(tail, last=False) + self._seal(b"", last=True)
        return self._seal(tail, last=True)


class RecordOpener:
    """Authenticates and decrypts the records :class:`RecordSealer` wrote, in order."""

    def __init__(self, data_key: bytes, sha256: str, record_bytes: int):
        self._aead = AESGCM(data_key)
        self._sha256 = sha256
        self.sealed_record_bytes = record_bytes + TAG_BYTES
        self._index = 0
        self.finished = False

    def open(self, sealed: bytes) -> bytes:
        """One record's plaintext; raises :class:`Tampered` when it does not authenticate or
        comes after the last one."""
        if self.finished:
            raise Tampered("data after the last record")
        last = len(sealed) < self.sealed_record_bytes
        try:
            plaintext = self._aead.decrypt(_nonce(self._index), sealed, _associated(self._sha256, last))
        except InvalidTag:
            raise Tampered(f"record {self._index} fails authentication") from None
        self._index += 1
        self.finished = last
        return plaintext

    def records(self, stored: bytes) -> Iterator[bytes]:
        """Every record of ``stored`` (all the sealed bytes at once), decrypted."""
        for start in range(0, len(stored), self.sealed_record_bytes):
            yield self.open(stored[start : start + self.sealed_record_bytes])
        if not self.finished:
            raise Tampered("truncated: the last record is missing")


class KeyRing:
    """The key-encryption keys by id, and the ``active`` one new data keys are wrapped by."""

    def __init__(self, keys: dict[str, bytes], active: str):
        if active not in keys:
            raise KeyConfigError(
                f"REGISTRY_ARTIFACT_KEY_ID: {active!r} is not a key of REGISTRY_ARTIFACT_KEYS"
            )
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise KeyConfigError(
                    f"REGISTRY_ARTIFACT_KEYS: key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}"
                )
        self._keys = dict(keys)
        self.active = active

    @classmethod
    def from_settings(cls, keys: SecretStr | None, active: str | None) -> KeyRing | None:
        """The ring ``REGISTRY_ARTIFACT_KEYS`` (a JSON object: key id -> base64 of 32 bytes)
        and ``REGISTRY_ARTIFACT_KEY_ID`` (optional with a single key) describe; None when no
        keys are set (artifacts are then stored unencrypted)."""
        active = active or None  # an empty variable (compose's ${VAR:-}) is an unset one
        if keys is None:
            if active is not None:
                raise KeyConfigError("REGISTRY_ARTIFACT_KEY_ID is set but REGISTRY_ARTIFACT_KEYS is not")
            return None
        try:
            parsed = json.loads(keys.get_secret_value())
        except json.JSONDecodeError:
            raise KeyConfigError(
                "REGISTRY_ARTIFACT_KEYS: not a JSON object of key id -> base64 key"
            ) from None
        if not isinstance(parsed, dict) or not parsed:
            raise KeyConfigError("REGISTRY_ARTIFACT_KEYS: not a JSON object of key id -> base64 key")
        decoded: dict[str, bytes] = {}
        for key_id, encoded in parsed.items():
            try:
                decoded[str(key_id)] = base64.b64decode(str(encoded), validate=True)
            except (binascii.Error, ValueError):
                raise KeyConfigError(f"REGISTRY_ARTIFACT_KEYS: key {key_id!r} is not base64") from None
        if active is None:
            if len(decoded) > 1:
                raise KeyConfigError(
                    "REGISTRY_ARTIFACT_KEY_ID: required when REGISTRY_ARTIFACT_KEYS holds several"
                )
            active = next(iter(decoded))
        return cls(decoded, active)

    def _wrap(self, data_key: bytes, sha256: str, record_bytes: int) -> WrappedKey:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._keys[self.active]).encrypt(nonce, data_key, self._bound(self.active, sha256))
        return WrappedKey(self.active, nonce + sealed, record_bytes)

    @staticmethod
    def _bound(key_id: str, sha256: str) -> bytes:
        """What a wrapped key is bound to: it unwraps only for its artifact and its key id."""
        return f"{ALGORITHM}:{key_id}:{sha256}".encode()

    def _unwrap(self, wrapped: WrappedKey, sha256: str) -> bytes:
        key = self._keys.get(wrapped.key_id)
        if key is None:
            raise UnknownKey(
                f"artifact {sha256} is encrypted under key {wrapped.key_id!r}, which REGISTRY_ARTIFACT_KEYS does not hold"
            )
        nonce, sealed = wrapped.sealed[:NONCE_BYTES], wrapped.sealed[NONCE_BYTES:]
        try:
            return AESGCM(key).decrypt(nonce, sealed, self._bound(wrapped.key_id, sha256))
        except InvalidTag:
            raise Tampered(f"the data key of artifact {sha256} fails authentication") from None

    def seal(self, sha256: str, record_bytes: int) -> tuple[RecordSealer, WrappedKey]:
        """A fresh data key for artifact ``sha256``: the sealer of its bytes, and the key wrapped."""
        data_key = AESGCM.generate_key(bit_length=8 * KEY_BYTES)
        return RecordSealer(data_key, sha256, record_bytes), self._wrap(data_key, sha256, record_bytes)

    def open(self, wrapped: WrappedKey, sha256: str) -> RecordOpener:
        """The opener of artifact ``sha256``'s records; raises :class:`UnknownKey` or :class:`Tampered`."""
        return RecordOpener(self._unwrap(wrapped, sha256), sha256, wrapped.record_bytes)

    def rewrap(self, wrapped: WrappedKey, sha256: str) -> WrappedKey | None:
        """The same data key wrapped by the active key, or None when it already is."""
        if wrapped.key_id == self.active:
            return None
        return self._wrap(self._unwrap(wrapped, sha256), sha256, wrapped.record_bytes)
