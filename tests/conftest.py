"""Session-wide real infrastructure: one Tansu broker and one SecantusDB server on free
loopback ports, started once and shared. Tests isolate themselves by topic prefix and
database name rather than by restarting either."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.auth import Scope, mint_token
from services.common.events import Topics
from services.common.localstack import ManagedProcess, free_port, start_kafka, start_mongo

# Servers under test should not fight the test process for both cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    mongodb_uri: str
    kafka: ManagedProcess
    mongodb: ManagedProcess
    auth_secret: str
    logs: Path

    def token(self, *scopes: Scope | str, subject: str = "tester") -> str:
        return mint_token(self.auth_secret, subject, scopes)

    def env(self, prefix: str, database: str) -> dict[str, str]:
        """The MLOPS_* environment for a service process under test."""
        return {
            "MLOPS_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "MLOPS_MONGODB_URI": self.mongodb_uri,
            "MLOPS_MONGODB_DATABASE": database,
            "MLOPS_TOPIC_PREFIX": prefix,
            "MLOPS_AUTH_SECRET": self.auth_secret,
            "MLOPS_LOG_FORMAT": "json",
        }


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    logs = tmp_path_factory.mktemp("infra-logs")
    kafka_port, mongo_port = free_port(), free_port()
    kafka = start_kafka(kafka_port, log_path=logs / "kafka.log")
    try:
        mongodb = start_mongo(mongo_port, ":memory:", log_path=logs / "mongodb.log")
    except BaseException:
        kafka.stop()
        raise
    try:
        yield Infra(
            kafka_bootstrap=f"127.0.0.1:{kafka_port}",
            mongodb_uri=f"mongodb://127.0.0.1:{mongo_port}",
            kafka=kafka,
            mongodb=mongodb,
            auth_secret=secrets.token_urlsafe(48),
            logs=logs,
        )
    finally:
        mongodb.stop()
        kafka.stop()


@pytest.fixture
def unique() -> str:
    """A short unique name for topic prefixes, database names and model names."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def topics(unique: str) -> Topics:
    return Topics(prefix=unique)
