"""Session-wide real infrastructure: one Tansu broker and one SecantusDB server on free
loopback ports, started once and shared. Tests isolate themselves by topic prefix and
database name rather than by restarting either."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.common.auth import Scope, ServiceCredentials
from services.common.events import Topics
from services.common.localstack import ManagedProcess, free_port, start_kafka, start_mongo
from tests.helpers.keys import Keys

# Servers under test should not fight the test process for both cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    mongodb_uri: str
    kafka: ManagedProcess
    mongodb: ManagedProcess
    logs: Path
    keys: Keys = field(default_factory=Keys)

    def token(self, *scopes: Scope | str, subject: str = "tester", teams: Sequence[str] = ()) -> str:
        """A token signed with the issuer key, as the registry would issue it (an hour long);
        for a ``service:`` subject, the service's own credentials."""
        held = [Scope(s) for s in scopes]
        if subject.startswith("service:"):
            return self.credentials(subject.removeprefix("service:"), *held)()
        return self.keys.mint(subject, *held, teams=teams)

    def credentials(self, service: str, *scopes: Scope) -> ServiceCredentials:
        """``service``'s own credentials, signed with the session's service key."""
        return ServiceCredentials(self.keys.service, service, scopes)

    def env(self, prefix: str, database: str) -> dict[str, str]:
        """The MLOPS_* environment for a service process under test."""
        return {
            "MLOPS_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "MLOPS_MONGODB_URI": self.mongodb_uri,
            "MLOPS_MONGODB_DATABASE": database,
            "MLOPS_TOPIC_PREFIX": prefix,
            "MLOPS_LOG_FORMAT": "json",
            **self.keys.env(),
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
