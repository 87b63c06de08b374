"""Pseudonymization of private fields at the door: keyed HMAC-SHA256.

The same value under the same key always gives the same pseudonym, so private
identifiers still join and group; without the key the pseudonym cannot be reversed
or recomputed from a guessed value. The key version is part of every pseudonym, so
data pseudonymized under a rotated key is recognisable instead of silently different.
The key itself comes from settings and is never stored with the data.
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymizer:
    """Turns a private value into ``<key version>:<64 hex digits>``.

    >>> p = Pseudonymizer(b"k" * 32, "2")
    >>> p("alice@example.com") == p("alice@example.com") != p("bob@example.com")
    True
    >>> p("alice@example.com")[:2]
    '2:'
    """

    def __init__(self, key: bytes, key_version: str):
        if len(key) < 32:
            raise ValueError("the pseudonymization key needs at least 32 bytes")
        self._key = key
        self.key_version = key_version

    def __call__(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return f"{self.key_version}:{digest}"

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_version={self.key_version!r})"


REDACTED = "<redacted: no pseudonymization key>"
"""What replaces a private value when no key is configured: the value is dropped, never kept."""
