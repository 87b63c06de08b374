"""The model aliases the platform itself moves and reads.

The registry points ``production`` at the version that answers requests and ``candidate`` at
one waiting for approval; serving routes by them, the monitor watches what ``production``
serves, and the trainer compares a new version with it. Other aliases are free for people.
"""

from __future__ import annotations

PRODUCTION = "production"
"""The version that answers requests."""

CANDIDATE = "candidate"
"""A version waiting for approval; serving may give it a canary share or a shadow copy."""
