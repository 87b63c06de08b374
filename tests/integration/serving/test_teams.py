"""A model serves only callers of its team, over gRPC and HTTP, as the registry says its
team is."""

from __future__ import annotations

import uuid

import grpc
import httpx
import pytest

from services.common.auth import Scope, bearer_metadata
from services.common.clients.access import AccessClient
from services.common.proto.inference import grpc_service_pb2 as oip
from tests.integration.serving.conftest import Fitted, Stack, features_request, version_metadata


async def test_a_model_of_team_alpha_serves_alpha_and_is_not_served_to_beta(
    stack: Stack, model_name: str, model_a: Fitted
) -> None:
    alpha, beta = f"alpha-{uuid.uuid4().hex[:6]}", f"beta-{uuid.uuid4().hex[:6]}"
    address = f"127.0.0.1:{stack.registry.grpc_port}"
    async with AccessClient(address, lambda: stack.infra.token(Scope.ADMIN)) as access:
        await access.create_team(alpha)
        await access.create_team(beta)
    await stack.admin.create_model(model_name, team=alpha)
    await stack.admin.create_version(version_metadata(model_name, model_a), model_a.artifact)
    await stack.served(model_name, production=1)
    assert stack.serving.manager is not None and stack.serving.manager.models[model_name].team == alpha

    request = features_request(model_name, model_a.X[:2])
    as_alpha = bearer_metadata(stack.infra.token(Scope.PREDICT, teams=[alpha]))
    as_beta = bearer_metadata(stack.infra.token(Scope.PREDICT, teams=[beta]))
    answered = await stack.stub.ModelInfer(request, metadata=as_alpha, timeout=10)
    assert answered.model_version == "1"
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stack.stub.ModelInfer(request, metadata=as_beta, timeout=10)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    assert hidden.value.details() == f"model '{model_name}' is not served", "as if there were no such model"
    with pytest.raises(grpc.aio.AioRpcError) as metadata:
        await stack.stub.ModelMetadata(
            oip.ModelMetadataRequest(name=model_name), metadata=as_beta, timeout=10
        )
    assert metadata.value.code() == grpc.StatusCode.NOT_FOUND
    ready = await stack.stub.ModelReady(oip.ModelReadyRequest(name=model_name), metadata=as_beta, timeout=10)
    assert not ready.ready
    index = await stack.stub.RepositoryIndex(oip.RepositoryIndexRequest(), metadata=as_beta, timeout=10)
    assert model_name not in {m.name for m in index.models}
    read_only = bearer_metadata(stack.infra.token(Scope.READ, teams=[alpha]))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stack.stub.ModelInfer(request, metadata=read_only, timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED  # no predict scope at all

    url = f"http://127.0.0.1:{stack.serving.http_port}/v2/models/{model_name}/infer"
    row = model_a.X[0].tolist()
    body = {"inputs": [{"name": "features", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
    async with httpx.AsyncClient(timeout=10) as http:
        beta_answer = await http.post(url, json=body, headers={"authorization": as_beta[0][1]})
        assert beta_answer.status_code == 404, beta_answer.text
        alpha_answer = await http.post(url, json=body, headers={"authorization": as_alpha[0][1]})
        assert alpha_answer.status_code == 200, alpha_answer.text
