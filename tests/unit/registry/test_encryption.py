"""Envelope encryption of artifacts: what is stored reveals nothing, and any change to it
(a flipped bit, records swapped or cut off, another artifact's key, a wrong key) is refused."""

from __future__ import annotations

import base64
import json
import os

import pytest
from pydantic import SecretStr

from services.registry.store.encryption import KeyConfigError, KeyRing, Tampered, UnknownKey, WrappedKey

SHA = "ab" * 32
RECORD = 1024


def keys(**ids: bytes) -> SecretStr:
    return SecretStr(json.dumps({key_id: base64.b64encode(key).decode() for key_id, key in ids.items()}))


def sealed(ring: KeyRing, plaintext: bytes, sha256: str = SHA) -> tuple[bytes, WrappedKey]:
    sealer, wrapped = ring.seal(sha256, RECORD)
    stored = b"".join(sealer.add(plaintext[:100]) + sealer.add(plaintext[100:]))
    return stored + sealer.finish(), wrapped


def opened(ring: KeyRing, stored: bytes, wrapped: WrappedKey, sha256: str = SHA) -> bytes:
    return b"".join(ring.open(wrapped, sha256).records(stored))


@pytest.mark.parametrize("size", [0, 1, RECORD - 1, RECORD, RECORD + 1, 3 * RECORD, 5000])
def test_round_trip_and_nothing_in_the_clear(size: int) -> None:
    ring = KeyRing({"k1": os.urandom(32)}, "k1")
    plaintext = os.urandom(size)
    stored, wrapped = sealed(ring, plaintext)
    assert opened(ring, stored, wrapped) == plaintext
    if size >= 32:
        assert plaintext[:32] not in stored and plaintext[-32:] not in stored
    assert wrapped.key_id == "k1" and wrapped.record_bytes == RECORD


def test_every_kind_of_damage_is_refused() -> None:
    ring = KeyRing({"k1": os.urandom(32)}, "k1")
    plaintext = os.urandom(3 * RECORD + 10)
    stored, wrapped = sealed(ring, plaintext)
    full = RECORD + 16
    flipped = bytearray(stored)
    flipped[5] ^= 1
    swapped = stored[full : 2 * full] + stored[:full] + stored[2 * full :]
    for damaged in (bytes(flipped), swapped, stored[: 3 * full], stored[:-1], stored + stored[-26:]):
        with pytest.raises(Tampered):
            opened(ring, damaged, wrapped)
    with pytest.raises(Tampered):  # another artifact's data key does not open these bytes
        opened(ring, stored, wrapped, sha256="cd" * 32)


def test_truncation_at_a_record_boundary_is_refused() -> None:
    ring = KeyRing({"k1": os.urandom(32)}, "k1")
    stored, wrapped = sealed(ring, os.urandom(2 * RECORD))
    # Two full records and an empty last one: cutting the last leaves whole records only.
    assert len(stored) == 2 * (RECORD + 16) + 16
    with pytest.raises(Tampered, match="truncated"):
        opened(ring, stored[:-16], wrapped)


def test_rotation_rewraps_the_data_key_and_keeps_the_bytes() -> None:
    old, new = os.urandom(32), os.urandom(32)
    before = KeyRing({"2026": old}, "2026")
    plaintext = os.urandom(2500)
    stored, wrapped = sealed(before, plaintext)
    during = KeyRing({"2026": old, "2027": new}, "2027")
    rewrapped = during.rewrap(wrapped, SHA)
    assert rewrapped is not None and rewrapped.key_id == "2027"
    assert during.rewrap(rewrapped, SHA) is None  # already under the active key
    after = KeyRing({"2027": new}, "2027")
    assert opened(after, stored, rewrapped) == plaintext
    with pytest.raises(UnknownKey, match="2026"):
        after.open(wrapped, SHA)


def test_a_wrong_key_under_the_same_id_is_refused() -> None:
    stored, wrapped = sealed(KeyRing({"k1": os.urandom(32)}, "k1"), b"model")
    with pytest.raises(Tampered, match="data key"):
        KeyRing({"k1": os.urandom(32)}, "k1").open(wrapped, SHA)


def test_settings() -> None:
    key = os.urandom(32)
    ring = KeyRing.from_settings(keys(k1=key), None)
    assert ring is not None and ring.active == "k1"
    assert KeyRing.from_settings(None, None) is None
    bad = [
        (keys(k1=key, k2=key), None, "REGISTRY_ARTIFACT_KEY_ID: required"),
        (keys(k1=key), "k9", "'k9' is not a key"),
        (keys(k1=os.urandom(16)), None, "16 bytes"),
        (SecretStr('{"k1": "not base64!"}'), None, "not base64"),
        (SecretStr("[1, 2]"), None, "JSON object"),
        (None, "k1", "REGISTRY_ARTIFACT_KEYS is not"),
    ]
    for value, active, message in bad:
        with pytest.raises(KeyConfigError, match=message) as caught:
            KeyRing.from_settings(value, active)
        assert base64.b64encode(key).decode() not in str(caught.value)
