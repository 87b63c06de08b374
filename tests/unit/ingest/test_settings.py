"""Ingest's settings: no default credentials, and refusals that never echo a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.ingest.settings import IngestSettings
from tests.helpers.keys import KEYS

SETTINGS = KEYS.settings()
REPO = Path(__file__).resolve().parents[3]


def test_defaults_follow_the_platform_contract() -> None:
    settings = IngestSettings(**SETTINGS)
    assert (settings.host, settings.http_port, settings.grpc_port) == ("127.0.0.1", 8081, 50052)
    assert settings.pseudonymization_key is None  # no default key: private fields need one set


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pseudonymization_key", "too-short"),
        ("pseudonymization_key_version", "has:colon"),
        ("consumer_batch_size", 0),
        ("grpc_port", 70000),
        ("max_event_bytes", 10),
    ],
)
def test_bad_values_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        IngestSettings(**SETTINGS, **{field: value})
    assert field in str(caught.value)


def test_the_service_refuses_to_start_without_echoing_the_bad_key() -> None:
    planted = "short-secret-key"
    env = {**os.environ, "MLOPS_AUTH_PUBLIC_KEYS": KEYS.public_keys, "INGEST_PSEUDONYMIZATION_KEY": planted}
    result = subprocess.run(
        [sys.executable, "-m", "services.ingest"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "pseudonymization_key" in result.stderr
    assert planted not in result.stderr + result.stdout
