"""Prediction logging never fails or blocks a prediction: with the broker gone mid-load,
answers keep coming while the records that cannot be sent are dropped and counted.

This test kills a broker, so it starts its own rather than the session's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from services.common.auth import Scope
from services.common.clients.registry import RegistryClient
from services.common.events import Topics
from services.common.localstack import ManagedProcess, free_port, start_kafka
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.registry.app import RegistryApp
from services.serving.app import ServingApp
from tests.conftest import Infra
from tests.helpers.apps import registry_settings
from tests.integration.serving.conftest import (
    Fitted,
    PredictionReader,
    Stack,
    features_request,
    serving_settings,
)

CLIENTS = 4


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[ManagedProcess]:
    kafka = start_kafka(free_port(), log_path=tmp_path / "kafka.log")
    yield kafka
    kafka.stop()


async def test_predictions_keep_succeeding_while_the_broker_is_down(
    infra: Infra, own_broker: ManagedProcess, model_a: Fitted
) -> None:
    bootstrap = f"127.0.0.1:{own_broker.ports['kafka']}"
    prefix = "out" + uuid.uuid4().hex[:8]
    registry = RegistryApp(registry_settings(infra, prefix, kafka_bootstrap_servers=bootstrap))
    await registry.start()
    serving = ServingApp(
        serving_settings(
            infra,
            prefix,
            registry.grpc_port,
            kafka_bootstrap_servers=bootstrap,
            prediction_buffer=100,
            prediction_flush_seconds=0.5,
        )
    )
    await serving.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{serving.grpc_port}")

    admin = RegistryClient(f"127.0.0.1:{registry.grpc_port}", lambda: infra.token(Scope.ADMIN))
    stack = Stack(
        infra,
        registry,
        serving,
        admin,
        Topics(prefix),
        channel,
        oip_grpc.GRPCInferenceServiceStub(channel),
        PredictionReader(bootstrap, Topics(prefix).predictions),
    )
    name = "outage-" + uuid.uuid4().hex[:6]
    answered = 0
    failures: list[str] = []
    stop = asyncio.Event()
    progress = asyncio.Condition()

    async def client() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                await stack.infer(features_request(name, model_a.X[:1]))
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")
            else:
                answered += 1
            async with progress:
                progress.notify_all()

    async def until(condition: object, within: float = 30) -> None:
        async with asyncio.timeout(within), progress:
            await progress.wait_for(condition)  # type: ignore[arg-type]

    publisher = serving.publisher
    assert publisher is not None

    def dropped_metric() -> float:
        return sum(
            REGISTRY.get_sample_value(
                "mlops_kafka_records_dropped_total", {"topic": stack.topics.predictions, "reason": reason}
            )
            or 0.0
            for reason in ("buffer_full", "broker_error", "unsent_at_stop")
        )

    dropped_before = dropped_metric()
    clients: list[asyncio.Task[None]] = []
    try:
        await stack.register(name, model_a)
        await stack.served(name, production=1)
        await stack.predictions.start()
        clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        await stack.predictions.wait_until(lambda records: len(records) >= 20)
        await stack.predictions.stop()

        own_broker.kill()
        answered_at_outage = answered
        await until(lambda: publisher.dropped > 0 and answered >= answered_at_outage + 300)
    finally:
        stop.set()
        await asyncio.gather(*clients)
        await channel.close()
        await admin.close()
        await serving.stop()
        await registry.stop()

    assert failures == []
    # Every record that never reached the broker is counted, under one reason or another.
    assert dropped_metric() - dropped_before == publisher.dropped > 0
