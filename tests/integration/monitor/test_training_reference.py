"""Data drift against the training reference, end to end: a real registry holds two
versions, one registered with a reference profile and one without; the monitor reads the
profile over gRPC and seeds its detectors, so live traffic shifted from training is data
drift on exactly the shifted feature, while the version without a profile falls back to
its own traffic and says so."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from services.common.artifacts import sha256_hex
from services.common.auth import Scope
from services.common.clients.registry import RegistryClient
from services.common.events import Topics, decode
from services.common.grpc_handlers import ServicerContext
from services.common.grpc_server import GrpcServer
from services.common.kafka import create_producer
from services.common.proto.mlops.v1 import events_pb2, model_pb2, registry_pb2, registry_pb2_grpc
from services.monitor.app import MonitorApp
from services.monitor.profiles import ProfileSource
from services.monitor.reference import NONE, TRAINING, UNAVAILABLE
from services.monitor.settings import MonitorSettings
from services.registry.app import RegistryApp
from tests.conftest import Infra
from tests.helpers.apps import registry_settings, started
from tests.helpers.artifacts import random_artifact
from tests.helpers.kafka import read_to_end
from tests.helpers.monitor import prediction, send
from tests.helpers.waiting import wait_for

FEATURES = ("f0", "f1", "f2", "f3")
SHIFTED = "f1"
LIVE = 1500
WAIT = 120.0


def profile(rng: random.Random) -> model_pb2.ReferenceProfile:
    """What the trainer records for standard normal features: 256 values each."""
    out = model_pb2.ReferenceProfile(row_count=4000, seed=1)
    for name in FEATURES:
        sample = [rng.gauss(0.0, 1.0) for _ in range(256)]
        out.features.add(name=name, count=4000, mean=0.0, std=1.0, min=-6.0, max=6.0, sample=sample)
    return out


def version_metadata(
    model: str, reference: model_pb2.ReferenceProfile | None
) -> tuple[registry_pb2.VersionMetadata, bytes]:
    artifact = random_artifact()
    described = registry_pb2.VersionMetadata(
        model_name=model,
        artifact=registry_pb2.Artifact(sha256=sha256_hex(artifact), size_bytes=len(artifact), format="skops"),
        signature=model_pb2.Signature(
            feature_names=FEATURES, classes=["0", "1"], task=model_pb2.TASK_CLASSIFICATION
        ),
    )
    if reference is not None:
        described.reference_profile.CopyFrom(reference)
    return described, artifact


@dataclass
class Setup:
    monitor: MonitorApp
    topics: Topics
    infra: Infra
    with_profile: str
    without_profile: str


@pytest.fixture(scope="module")
async def setup(infra: Infra) -> AsyncIterator[Setup]:
    prefix = f"ref{uuid.uuid4().hex[:8]}"
    topics = Topics(prefix)
    async with started(RegistryApp(registry_settings(infra, prefix))) as registry:
        address = f"127.0.0.1:{registry.grpc_port}"
        with_profile, without_profile = f"{prefix}-a", f"{prefix}-b"
        writer = infra.credentials("trainer", Scope.WRITE)
        async with RegistryClient(address, writer) as client:
            for model, reference in ((with_profile, profile(random.Random(1))), (without_profile, None)):
                await client.create_model(model)
                await client.create_version(*version_metadata(model, reference))
        settings = MonitorSettings(
            MLOPS_KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap,
            MLOPS_TOPIC_PREFIX=prefix,
            **infra.keys.settings(),
            MLOPS_REGISTRY_ADDRESS=address,
            http_port=0,
            commit_interval_seconds=0.2,
        )
        async with started(MonitorApp(settings)) as monitor:
            yield Setup(monitor, topics, infra, with_profile, without_profile)


def version_status(monitor: MonitorApp, model: str) -> dict[str, object] | None:
    for entry in monitor.monitor.status(time.time()):
        if entry["model"] == model:
            return dict(entry["versions"][0])
    return None


async def test_live_traffic_shifted_from_training_is_data_drift_on_that_feature_only(setup: Setup) -> None:
    rng = random.Random(7)
    now = time.time()
    producer = create_producer(setup.infra.kafka_bootstrap, "reference-test")
    await producer.start()
    try:
        records = []
        for model in (setup.with_profile, setup.without_profile):
            for i in range(LIVE):
                # Shifted by 1 sd from the training data since the first live request.
                features = [rng.gauss(1.0 if name == SHIFTED else 0.0, 1.0) for name in FEATURES]
                records.append(
                    prediction(
                        setup.topics.predictions,
                        f"{model}-{i}",
                        model,
                        1,
                        "1",
                        occurred_at=now + i,
                        features=features,
                    )
                )
        await send(producer, records)
    finally:
        await producer.stop()

    def counted() -> bool:
        return all(
            (status := version_status(setup.monitor, model)) is not None and status["predictions"] == LIVE
            for model in (setup.with_profile, setup.without_profile)
        )

    await wait_for(counted, WAIT, "every prediction counted")
    drifts = [
        decode(r, events_pb2.DriftEvent).message
        for r in await read_to_end(setup.infra.kafka_bootstrap, setup.topics.drift)
    ]
    data = {(d.model_name, d.feature) for d in drifts if d.kind == events_pb2.DRIFT_KIND_DATA}
    assert data == {(setup.with_profile, SHIFTED)}, drifts

    seeded = version_status(setup.monitor, setup.with_profile)
    assert seeded is not None
    assert seeded["reference"] == {"status": TRAINING, "detail": "", "features": len(FEATURES), "rows": 4000}
    assert seeded["features"][SHIFTED]["state"] == "drift"  # type: ignore[index]
    fallback = version_status(setup.monitor, setup.without_profile)
    assert fallback is not None and fallback["reference"]["status"] == NONE  # type: ignore[index]
    assert fallback["features"][SHIFTED]["reference"] == "recent_traffic"  # type: ignore[index]


class UnavailableRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """A stand-in registry whose database is away: it counts the versions it is asked for
    and answers UNAVAILABLE."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def GetModelVersion(
        self, request: registry_pb2.GetModelVersionRequest, context: ServicerContext
    ) -> registry_pb2.ModelVersion:
        self.asked.append((request.model_name, request.version))
        await context.abort(grpc.StatusCode.UNAVAILABLE, "database away")


async def test_an_unavailable_registry_is_reported_and_not_asked_again_until_the_pause_ends(
    infra: Infra,
) -> None:
    registry = UnavailableRegistry()  # type: ignore[abstract]  # the rest answer UNIMPLEMENTED
    server = GrpcServer("127.0.0.1:0")
    server.add_service(
        registry_pb2_grpc.add_RegistryServiceServicer_to_server, registry, "mlops.v1.RegistryService"
    )
    await server.start()
    reader = infra.credentials("monitor", Scope.READ)
    source = ProfileSource(RegistryClient(f"127.0.0.1:{server.port}", reader, timeout=2.0), retry_seconds=60)
    try:
        first = await source.lookup("m", 1, now=100.0)
        assert first.status == UNAVAILABLE and "UNAVAILABLE" in first.detail
        assert registry.asked == [("m", 1)]
        # Within the pause: answered from what the last call said, without a call.
        second = await source.lookup("m", 2, now=130.0)
        assert (second.status, second.detail) == (UNAVAILABLE, first.detail)
        assert registry.asked == [("m", 1)]
        # Once the pause is over, the registry is asked again.
        third = await source.lookup("m", 2, now=160.0)
        assert third.status == UNAVAILABLE
        assert registry.asked == [("m", 1), ("m", 2)]
    finally:
        await source.close()
        await server.stop(grace=0)
