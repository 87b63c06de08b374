"""What the embedded broker (Tansu 0.6.0) does with Kafka security, measured, and how far
the platform's settings can be exercised against it.

- TLS: ``tansu broker`` has ``--cert`` and ``--key`` options, but its argument parser
  refuses them together ("'--cert' cannot be used with '--key'"), and ``--cert`` alone
  leaves the listener in plaintext: TLS cannot be turned on.
- SASL: ``--authentication`` makes the broker refuse every client that does not
  authenticate (below); SCRAM users are created through the broker (``tansu user
  create``), which then refuses that unauthenticated request too, so with memory storage
  no user can exist and no SASL login can succeed.
- Without ``--authentication`` the broker answers a SASL handshake with
  UnsupportedSaslMechanism: a client configured for SASL is seen to ask for its mechanism
  on the wire (below), which is as far as a login can go here.

The mapping of the settings to each client is tested in tests/unit/common/test_kafka_security.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, UnsupportedSaslMechanismError
from pydantic import SecretStr

from services.common.kafka import create_producer
from services.common.kafka_security import KafkaSecurity
from services.common.localstack import free_port, start_kafka
from tests.conftest import Infra

SCRAM = KafkaSecurity(
    protocol="SASL_PLAINTEXT", mechanism="SCRAM-SHA-512", username="mlops", password=SecretStr("s3cret")
)


@pytest.fixture
def authenticating_broker(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = start_kafka(port, log_path=tmp_path / "kafka.log", authentication=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.stop()


async def test_a_broker_that_requires_authentication_refuses_a_plaintext_client(
    authenticating_broker: str,
) -> None:
    producer = create_producer(authenticating_broker, "test")
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()


async def test_the_sasl_settings_reach_the_broker(infra: Infra) -> None:
    host, _, port = infra.kafka_bootstrap.rpartition(":")
    options = SCRAM.aiokafka()
    with pytest.raises(UnsupportedSaslMechanismError):
        await create_conn(host, int(port), request_timeout_ms=5000, **options)
    # The same connection without the settings is accepted: the refusal was the SASL handshake's.
    connection = await create_conn(host, int(port), request_timeout_ms=5000)
    connection.close()
