"""A restarted replica that has not read the registry yet answers UNAVAILABLE (retry), never
NOT_FOUND (which tells clients not to retry): here its link to the registry is cut (a proxy
the test controls) while it starts, so it stays in that state until the link is mended."""

from __future__ import annotations

import grpc
import numpy as np

from services.common.auth import Scope
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.serving.app import ServingApp
from tests.helpers.apps import started
from tests.helpers.proxy import TcpProxy
from tests.helpers.waiting import eventually
from tests.integration.serving.conftest import Fitted, Stack, features_request, output, serving_settings


async def test_until_it_has_read_the_registry_a_restarted_replica_answers_unavailable(
    stack: Stack, model_name: str, model_a: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    metadata = (("authorization", f"Bearer {stack.infra.token(Scope.PREDICT)}"),)
    rows = model_a.X[:3]
    with TcpProxy(stack.registry.grpc_port) as link:
        link.cut()
        settings = serving_settings(stack.infra, stack.topics.prefix, link.port, startup_timeout_seconds=0.5)
        async with started(ServingApp(settings)) as restarted:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{restarted.grpc_port}") as channel:
                stub = oip_grpc.GRPCInferenceServiceStub(channel)

                async def infer() -> grpc.StatusCode | np.ndarray:
                    try:
                        response = await stub.ModelInfer(
                            features_request(model_name, rows), metadata=metadata, timeout=10
                        )
                    except grpc.aio.AioRpcError as exc:
                        return exc.code()
                    return output(response, "probabilities")

                for name in (model_name, "never-registered"):
                    try:
                        await stub.ModelInfer(features_request(name, rows), metadata=metadata, timeout=10)
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() is grpc.StatusCode.UNAVAILABLE, (name, exc.code(), exc.details())
                        assert "not loaded yet" in (exc.details() or "")
                    else:
                        raise AssertionError(f"{name} answered before the registry was read")

                link.mend()
                answer = await eventually(infer, lambda a: not isinstance(a, grpc.StatusCode), within=60)
                assert not isinstance(answer, grpc.StatusCode)
                np.testing.assert_allclose(answer, model_a.proba(rows))
