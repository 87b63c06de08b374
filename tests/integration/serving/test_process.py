"""``python -m services.serving`` as its own process: serves, then stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import grpc
import numpy as np
from grpc_health.v1 import health_pb2

from services.common.clients.health import health_stub
from services.common.localstack import free_port
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from tests.integration.serving.conftest import Fitted, Stack, features_request, output


def serving_env(stack: Stack, grpc_port: int, http_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "SERVING_"))}
    env.update(
        {
            "MLOPS_KAFKA_BOOTSTRAP_SERVERS": stack.infra.kafka_bootstrap,
            "MLOPS_TOPIC_PREFIX": stack.topics.prefix,
            **stack.infra.keys.env(),
            "MLOPS_REGISTRY_ADDRESS": f"127.0.0.1:{stack.registry.grpc_port}",
            "SERVING_GRPC_PORT": str(grpc_port),
            "SERVING_HTTP_PORT": str(http_port),
            "OMP_NUM_THREADS": "1",
        }
    )
    return env


async def test_the_service_process_serves_and_exits_zero_on_sigterm(
    stack: Stack, model_name: str, model_a: Fitted
) -> None:
    await stack.register(model_name, model_a)
    grpc_port, http_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.serving",
        env=serving_env(stack, grpc_port, http_port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            health = health_stub(channel)
            # The health protocol says SERVING only once the served models are loaded. With the
            # default of a worker per core, start-up took 82 s at a load average of 18.
            watch = health.Watch(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=180)
            async for update in watch:
                if update.status == health_pb2.HealthCheckResponse.SERVING:
                    watch.cancel()
                    break
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ServerReady(oip.ServerReadyRequest())).ready
            response = await stub.ModelInfer(
                features_request(model_name, model_a.X[:2]), metadata=stack.metadata(), timeout=10
            )
            np.testing.assert_allclose(output(response, "probabilities"), model_a.proba(model_a.X[:2]))
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert b"serving_stopped" in stderr


async def test_missing_settings_are_named_and_exit_two() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "SERVING_"))}
    env["SERVING_GRPC_PORT"] = "not-a-port"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.serving",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, stderr = await process.communicate()
    assert process.returncode == 2
    assert b"MLOPS_AUTH_PUBLIC_KEYS" in stderr and b"grpc_port" in stderr
