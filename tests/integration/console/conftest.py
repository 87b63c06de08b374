"""One platform for the console's tests: the registry, ingest, the monitor and the console,
in process on free ports, against the session's real broker and database, under one topic
prefix. Started once per package (the monitor's group join and faust cost seconds); each
test works on models of its own."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from sklearn.linear_model import LogisticRegression
from skops import io as skops_io

from services.common.auth import Scope
from services.common.clients.registry import AUTO, MANUAL, RegistryClient
from services.common.events import Topics
from services.common.kafka import create_producer
from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.console.app import ConsoleApp
from services.console.settings import ConsoleSettings
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.monitor.app import MonitorApp
from services.monitor.settings import MonitorSettings
from services.registry.app import RegistryApp
from tests.conftest import Infra
from tests.helpers.apps import app_settings, registry_settings, started
from tests.helpers.monitor import label, prediction, send

FEATURES = ("f0", "f1")
SESSION_KEY = "console-test-session-key-0123456789abcdef"


SKOPS = "skops"


def _artifact(seed: int) -> bytes:
    """A real (tiny) scikit-learn model in the skops format, which the registry verifies."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, len(FEATURES)))
    artifact: bytes = skops_io.dumps(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)))
    return artifact


def _profile(seed: int) -> model_pb2.ReferenceProfile:
    """A training reference for f0 and f1, both around 0.5 with sd 0.1."""
    rng = random.Random(seed)
    features = []
    for name in FEATURES:
        sample = [rng.gauss(0.5, 0.1) for _ in range(256)]
        features.append(
            model_pb2.FeatureProfile(
                name=name, count=1000, mean=0.5, std=0.1, min=min(sample), max=max(sample), sample=sample
            )
        )
    return model_pb2.ReferenceProfile(features=features, row_count=1000, seed=seed)


def metadata(
    name: str,
    *,
    accuracy: float,
    gates_passed: bool = True,
    content_sha256: str = "ab" * 32,
    parent_version: int = 0,
    params: dict[str, str] | None = None,
) -> registry_pb2.VersionMetadata:
    """A version as the trainer describes one: metrics, gates with thresholds, params, lineage."""
    return registry_pb2.VersionMetadata(
        model_name=name,
        artifact=registry_pb2.Artifact(format=SKOPS),
        metrics={"accuracy": accuracy, "f1": accuracy - 0.05, "robustness.noise_drop": 0.01},
        params=params or {"family": "logistic_regression", "estimator.C": "1.0"},
        signature=model_pb2.Signature(
            inputs=[model_pb2.TensorSpec(name="features", datatype="FP64", shape=[-1, 2])],
            outputs=[model_pb2.TensorSpec(name="probabilities", datatype="FP64", shape=[-1, 2])],
            feature_names=list(FEATURES),
            classes=["0", "1"],
            task=model_pb2.TASK_CLASSIFICATION,
        ),
        lineage=model_pb2.Lineage(
            data=model_pb2.MaterializedWindow(
                window=model_pb2.DataWindow(dataset="orders"), content_sha256=content_sha256, row_count=1000
            ),
            code_version="test",
            parent_version=parent_version,
            trigger="manual",
        ),
        gates=[
            model_pb2.GateResult(name="min_metric", passed=gates_passed, value=accuracy, threshold=0.8),
            model_pb2.GateResult(name="max_noise_drop", passed=True, value=0.01, threshold=0.05),
        ],
        gates_passed=gates_passed,
        reference_profile=_profile(parent_version),
    )


@dataclass
class Platform:
    """The running services and what tests seed them with."""

    infra: Infra
    topics: Topics
    registry: RegistryApp
    ingest: IngestApp
    monitor: MonitorApp
    console: ConsoleApp
    admin: RegistryClient
    trainer: RegistryClient
    """Registers versions as the trainer does (its own subject, so people may approve them)."""
    producer: AIOKafkaProducer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.console.http_port}"

    def token(self, *scopes: Scope | str, subject: str = "ana") -> str:
        return self.infra.token(*scopes, subject=subject)

    async def model(
        self, prefix: str, versions: list[float], *, policy: registry_pb2.PromotionPolicy.ValueType = AUTO
    ) -> str:
        """A new model with one version per accuracy given (each a child of the one before)."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        await self.admin.create_model(name, f"{prefix} test model", policy, tags={"team": "console"})
        for number, accuracy in enumerate(versions, start=1):
            await self.trainer.create_version(
                metadata(name, accuracy=accuracy, parent_version=number - 1), _artifact(number)
            )
        return name

    async def drift(self, model: str, version: int, *, samples: int = 1200, error: float = 0.05) -> None:
        """Predictions of ``model`` v``version`` and their labels, wrong ``error`` of the time,
        timed now; they reach the monitor over the real topics."""
        rng = random.Random(f"{model}{error}")
        start = time.time() - samples * 0.01
        records = []
        for i in range(samples):
            event_id = f"{model}-{error}-{i}"
            at = start + i * 0.01
            features = (rng.gauss(0.5, 0.1), rng.gauss(0.5 if error < 0.2 else 0.9, 0.1))
            records.append(
                prediction(
                    self.topics.predictions, event_id, model, version, "1", occurred_at=at, features=features
                )
            )
            wrong = rng.random() < error
            records.append(label(self.topics.labels, event_id, 0.0 if wrong else 1.0, event_time=at))
        await send(self.producer, records)


@pytest.fixture(scope="package")
async def platform(infra: Infra) -> AsyncIterator[Platform]:
    prefix = "con" + uuid.uuid4().hex[:8]
    topics = Topics(prefix)
    async with AsyncExitStack() as stack:
        registry = await stack.enter_async_context(started(RegistryApp(registry_settings(infra, prefix))))
        ingest = await stack.enter_async_context(
            started(
                IngestApp(
                    app_settings(
                        IngestSettings,
                        infra,
                        prefix,
                        pseudonymization_key=SecretStr("k" * 48),
                        fetch_max_wait_ms=20,
                    )
                )
            )
        )
        registry_address = f"127.0.0.1:{registry.grpc_port}"
        monitor = await stack.enter_async_context(
            started(
                MonitorApp(
                    MonitorSettings(
                        MLOPS_KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap,
                        MLOPS_TOPIC_PREFIX=prefix,
                        **infra.keys.settings(),
                        MLOPS_REGISTRY_ADDRESS=registry_address,
                        http_port=0,
                        sweep_interval_seconds=0.2,
                        commit_interval_seconds=0.2,
                        cooldown_seconds=3600,
                        retrain_min_samples=100,
                        timeline_interval_seconds=0.5,
                    )
                )
            )
        )
        console = await stack.enter_async_context(
            started(
                ConsoleApp(
                    ConsoleSettings(
                        MLOPS_KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap,
                        MLOPS_TOPIC_PREFIX=prefix,
                        MLOPS_REGISTRY_ADDRESS=registry_address,
                        http_port=0,
                        monitor_urls=[f"http://127.0.0.1:{monitor.http_port}"],
                        ingest_url=f"http://127.0.0.1:{ingest.http_port}",
                        session_key=SecretStr(SESSION_KEY),
                        refresh_seconds=1,
                    )
                )
            )
        )
        admin_token = infra.token(Scope.ADMIN, subject="admin")
        trainer_token = infra.token(Scope.WRITE, Scope.READ, subject="service:trainer")
        admin = RegistryClient(registry_address, lambda: admin_token)
        trainer = RegistryClient(registry_address, lambda: trainer_token)
        stack.push_async_callback(admin.close)
        stack.push_async_callback(trainer.close)
        producer = create_producer(infra.kafka_bootstrap, "console-test")
        await producer.start()
        stack.push_async_callback(producer.stop)
        yield Platform(infra, topics, registry, ingest, monitor, console, admin, trainer, producer)


__all__ = ["MANUAL", "Platform", "metadata"]
