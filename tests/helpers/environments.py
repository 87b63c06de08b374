"""Components that run in environments of their own (tritonclient, Flower): their tests
skip on a developer's machine without the environment, and fail in CI, where building it
is part of the build (``make test`` does), so a missing environment is never a green run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT_PYTHON = ROOT / ".venv-client" / "bin" / "python"
"""tritonclient's own environment (``make client-venv``): it pins protobuf < 7, the platform uses 7."""
FEDERATION_PYTHON = ROOT / ".venv-federation" / "bin" / "python"
"""Flower's own environment (``make federation-venv``): it pins protobuf < 7 and more."""


def require(python: Path, target: str) -> None:
    """Skip unless ``python`` exists; in CI (``CI`` set), fail instead."""
    if python.exists():
        return
    missing = f"no {python.parent.parent.name}: run `make {target}` (make test does)"
    if os.environ.get("CI"):
        pytest.fail(missing)
    pytest.skip(missing)
