"""The federation service against the real platform: the registry (over its REST API only),
serving and the broker, in process on the session's embedded broker and database; the
federation service and two site agents as processes from the federation's environment.

A first run registers a version that the registry promotes and serving serves; then a
drift's retrain request (no spec, as the monitor sends it) on ``train.requests`` starts a
second federated run from the production version, answered on ``train.results``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from services.cli.federated import site_rows, write_csv
from services.common.auth import Scope
from services.common.clients.registry import RegistryClient
from services.common.errors import NotFound
from services.common.events import Topics, encode
from services.common.kafka import create_producer, publish
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.common.proto.mlops.v1 import events_pb2
from services.common.proto.mlops.v1.model_pb2 import TRAINING_FEDERATED
from services.federation import runtime
from services.federation.service import OUTCOME_FILE
from services.federation.status import read_status
from services.registry.app import RegistryApp
from services.serving.app import ServingApp
from services.serving.settings import ServingSettings
from tests.conftest import Infra
from tests.helpers.apps import app_settings, registry_settings, started
from tests.helpers.artifacts import opened
from tests.helpers.kafka import TopicReader
from tests.helpers.waiting import eventually
from tests.integration.federation.conftest import FEDERATION_BIN, spec

# Flower's processes start a ClientApp per message: minutes on a busy two-core machine.
pytestmark = [pytest.mark.timeout(900)]


@dataclass
class Platform:
    infra: Infra
    topics: Topics
    registry_app: RegistryApp
    serving: ServingApp
    registry: RegistryClient


@pytest.fixture
async def platform(infra: Infra) -> AsyncIterator[Platform]:
    prefix = "fed" + uuid.uuid4().hex[:8]
    async with AsyncExitStack() as running:
        registry_app = await running.enter_async_context(
            started(RegistryApp(registry_settings(infra, prefix)))
        )
        serving = await running.enter_async_context(
            started(
                ServingApp(
                    app_settings(
                        ServingSettings,
                        infra,
                        prefix,
                        registry_address=f"127.0.0.1:{registry_app.grpc_port}",
                        resync_interval_seconds=600,
                    )
                )
            )
        )
        registry = await running.enter_async_context(
            RegistryClient(f"127.0.0.1:{registry_app.grpc_port}", lambda: infra.token(Scope.ADMIN))
        )
        yield Platform(infra, Topics(prefix), registry_app, serving, registry)


async def test_a_federated_model_is_registered_served_and_retrained_on_drift(
    platform: Platform, tmp_path: Path
) -> None:
    federation_dir = tmp_path / "federation"
    port = runtime.free_port()
    certificates = tmp_path / "certs"
    made = await asyncio.create_subprocess_exec(
        str(FEDERATION_BIN / "python"),
        "-m",
        "services.federation",
        "certificates",
        "--dir",
        str(certificates),
    )
    assert await made.wait() == 0
    values = spec(
        secure_aggregation={"enabled": False},
        # Noise a one-round model survives, so the gates pass: at 1.0 (a standard deviation of
        # 0.5 on each weight of two sites' average) about one run in nine scored under the 0.5
        # floor in a simulation of the round (2,000 draws), and one did in CI; at 0.3 none did.
        privacy={"enabled": True, "noise_multiplier": 0.3, "clipping_norm": 1.0},
        strategy={"expected_sites": 2},
        gates={"min_metric": 0.5, "max_regression": 0.5},
    )
    model = values["model_name"]
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(json.dumps(values))  # JSON is YAML
    flower = runtime.Flower(FEDERATION_BIN)
    env = {
        **os.environ,
        "FEDERATION_WORKDIR": str(federation_dir),
        "FEDERATION_PORT": str(port),
        "FEDERATION_REGISTRY_URL": f"http://127.0.0.1:{platform.registry_app.http_port}",
        "FEDERATION_TOKEN": platform.infra.token(Scope.READ, Scope.WRITE, subject="service:federation"),
        "FEDERATION_SSL_CERTFILE": str(certificates / "superlink.pem"),
        "FEDERATION_SSL_KEYFILE": str(certificates / "superlink.key"),
        "FEDERATION_SSL_CA_CERTFILE": str(certificates / "ca.pem"),
        "MLOPS_KAFKA_BOOTSTRAP_SERVERS": platform.infra.kafka_bootstrap,
        "MLOPS_TOPIC_PREFIX": platform.topics.prefix,
        "MLOPS_CODE_VERSION": "test-sha",
    }
    children: list[runtime.Child] = []
    try:
        children.append(
            runtime.Child(
                "federation",
                [
                    str(FEDERATION_BIN / "python"),
                    "-m",
                    "services.federation",
                    "serve",
                    "--spec",
                    str(spec_path),
                ],
                env,
                tmp_path / "federation.log",
            )
        )
        for name, skew in (("clinic-a", 0), ("clinic-b", 1)):
            data = tmp_path / f"{name}.csv"
            write_csv(data, *site_rows(skew, 300, np.random.default_rng(skew)))
            command = [
                str(FEDERATION_BIN / "python"),
                "-m",
                "services.federation.site",
                "run",
                "--name",
                name,
            ]
            command += ["--server", f"127.0.0.1:{port}", "--data", str(data), "--allow-plain-updates"]
            command += [
                "--root-certificates",
                str(certificates / "ca.pem"),
                "--workdir",
                str(tmp_path / name),
            ]
            command += ["--clientapp-port", str(runtime.free_port())]
            children.append(runtime.Child(name, command, flower.env(), tmp_path / f"{name}.log"))

        # The first run's outcome file says how it ended; a failed run fails here, with the
        # federation's and the sites' logs, rather than as a wait for an alias that never comes.
        try:
            outcome = await eventually(lambda: _first_outcome(federation_dir), bool, within=400, interval=1)
        except TimeoutError:
            raise AssertionError(_account({}, children, federation_dir)) from None
        assert outcome.get("version") == 1, _account(outcome, children, federation_dir)
        production = await eventually(
            lambda: _production(platform.registry, model), bool, within=60, interval=0.5
        )
        version = await platform.registry.get_version(model, production)
        assert version.version == 1
        assert json.loads(version.params["federation.sites"]) == ["clinic-a", "clinic-b"]
        assert version.params["federation.rounds_applied"] == "1"
        assert version.lineage.trigger == "federated" and version.lineage.code_version == "test-sha"
        assert version.metrics["privacy.epsilon"] > 0 and version.metrics["privacy.delta"] == 1e-5
        assert version.spec.training == TRAINING_FEDERATED and version.tags["training"] == "federated"
        assert version.gates_passed and [g.name for g in version.gates] == ["min_metric"]

        # Serving loads it as any scikit-learn version and answers what the artifact computes.
        rows = np.random.default_rng(3).normal(size=(4, 6))
        _, artifact = await platform.registry.download_artifact(model, 1)
        estimator = opened("skops", artifact, version.signature)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.serving.grpc_port}") as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            metadata = (("authorization", f"Bearer {platform.infra.token(Scope.PREDICT)}"),)
            request = oip.ModelInferRequest(model_name=model)
            tensor = request.inputs.add(name="features", datatype="FP64", shape=[4, 6])
            tensor.contents.fp64_contents.extend(rows.ravel().tolist())
            response = await eventually(
                lambda: _infer(stub, request, metadata), lambda r: r is not None, within=60, interval=0.5
            )
        assert response is not None and response.model_version == "1"
        probabilities = np.array(response.outputs[0].contents.fp64_contents).reshape(4, 2)
        np.testing.assert_allclose(probabilities, estimator.predict_proba(rows))

        # A drift's retrain request, as the monitor sends it (no spec), is the federation's.
        listening = federation_dir / "listening.json"
        await eventually(lambda: _exists(listening), bool, within=120, interval=0.5)
        async with TopicReader(
            platform.infra.kafka_bootstrap, platform.topics.train_results, events_pb2.TrainResult, within=400
        ) as results:
            retrain = events_pb2.TrainRequest(
                request_id="retrain-" + uuid.uuid4().hex[:8],
                idempotency_key="drift:" + model,
                model_name=model,
                trigger=events_pb2.TRAIN_TRIGGER_DRIFT,
                parent_version=1,
                drift_event_id="drift-1",
            )
            producer = create_producer(platform.infra.kafka_bootstrap, "federation-tests", linger_ms=1)
            await producer.start()
            try:
                await publish(
                    producer, [encode(platform.topics.train_requests, retrain, source="/monitor", key=model)]
                )
            finally:
                await producer.stop()
            answers = await results.wait_for(
                lambda r: r.request_id == retrain.request_id and r.status != events_pb2.TRAIN_STATUS_STARTED
            )
        (final,) = answers
        assert final.status == events_pb2.TRAIN_STATUS_REGISTERED, final.error
        assert [r.status for r in results.received if r.request_id == retrain.request_id][0] == (
            events_pb2.TRAIN_STATUS_STARTED
        )
        retrained = await platform.registry.get_version(model, final.version)
        assert retrained.version == 2
        assert retrained.lineage.trigger == "drift" and retrained.lineage.drift_event_id == "drift-1"
        assert (
            retrained.lineage.parent_version == 1 and retrained.lineage.train_request_id == retrain.request_id
        )
        assert {g.name for g in retrained.gates} == {"min_metric", "challenger"}
    finally:
        runtime.stop_all(children)


async def _production(registry: RegistryClient, model: str) -> int:
    """The version ``production`` points at; 0 while the model or the alias does not exist."""
    try:
        return int((await registry.get_model(model)).aliases.get("production", 0))
    except NotFound:
        return 0


async def _infer(
    stub: oip_grpc.GRPCInferenceServiceAsyncStub,
    request: oip.ModelInferRequest,
    metadata: tuple[tuple[str, str], ...],
) -> oip.ModelInferResponse | None:
    try:
        return await stub.ModelInfer(request, metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError:
        return None


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


async def _first_outcome(federation_dir: Path) -> dict[str, Any]:
    """The first run's ``outcome.json``; empty until the service has written it."""

    def read() -> dict[str, Any]:
        for path in sorted((federation_dir / "runs").glob(f"*/{OUTCOME_FILE}")):
            with contextlib.suppress(OSError, ValueError):
                value = json.loads(path.read_text())
                return value if isinstance(value, dict) else {}
        return {}

    return await asyncio.to_thread(read)


def _account(outcome: dict[str, Any], children: list[runtime.Child], federation_dir: Path) -> str:
    """What the run came to, the ServerApp's status and every process's last lines."""
    runs = sorted((federation_dir / "runs").glob("*"))
    run_dir = Path(str(outcome["run_dir"])) if "run_dir" in outcome else runs[0] if runs else federation_dir
    logs = "\n".join(f"--- {child.name}\n{child.tail(2500)}" for child in children)
    superlink = federation_dir / "superlink.log"
    superlink_tail = superlink.read_text(errors="replace")[-2500:] if superlink.exists() else ""
    return f"{outcome}\nstatus: {read_status(run_dir)}\n{logs}\n--- superlink\n{superlink_tail}"
