"""A bad promotion never costs a working model across a restart: a version that passed the
registry's checks but cannot be served (its signature does not fit its model) is promoted;
the running replica keeps its version, and a restarted replica falls back to the production
version before it, saying so in the repository index and in a gauge."""

from __future__ import annotations

import grpc
import httpx
import numpy as np

from services.common.auth import Scope
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.serving.app import ServingApp
from services.serving.models import ModelState
from tests.helpers.apps import started
from tests.integration.serving.conftest import (
    Fitted,
    Stack,
    features_request,
    output,
    serving_settings,
    version_metadata,
)


async def test_a_restarted_replica_serves_the_previous_production_version_and_says_why(
    stack: Stack, model_name: str, model_a: Fitted, model_b: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    mismatched = version_metadata(model_name, model_b)
    mismatched.signature.classes[:] = ["no", "yes"]  # the model's classes are "0" and "1"
    promoted = await stack.admin.create_version(mismatched, model_b.artifact)
    assert promoted.version == 2 and list(promoted.aliases) == ["production"]
    assert stack.serving.manager is not None
    await stack.serving.manager.wait_for(lambda models: models[model_name].fallback_from == 2, within=20)

    settings = serving_settings(stack.infra, stack.topics.prefix, stack.registry.grpc_port)
    async with started(ServingApp(settings)) as restarted:
        assert restarted.manager is not None
        await restarted.manager.wait_for(
            lambda models: model_name in models and models[model_name].state is ModelState.READY, within=30
        )
        model = restarted.manager.models[model_name]
        assert model.fallback_from == 2 and model.versions["production"].number == 1
        assert "version 2 (production) cannot be served: signature classes ['no', 'yes']" in model.reason

        token = stack.infra.token(Scope.PREDICT)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{restarted.grpc_port}") as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            metadata = (("authorization", f"Bearer {token}"),)
            rows = model_a.X[:4]
            response = await stub.ModelInfer(
                features_request(model_name, rows), metadata=metadata, timeout=10
            )
            assert response.model_version == "1"
            np.testing.assert_allclose(output(response, "probabilities"), model_a.proba(rows))
            index = await stub.RepositoryIndex(oip.RepositoryIndexRequest(), metadata=metadata)
        entry = next(m for m in index.models if m.name == model_name)
        assert (entry.version, entry.state) == ("1", "READY")
        assert entry.reason.startswith(
            "production (in place of version 2: version 2 (production) cannot be served"
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{restarted.http_port}") as http:
            metrics = (await http.get("/metrics")).text
        assert f'mlops_serving_production_fallback{{model="{model_name}"}} 2.0' in metrics
