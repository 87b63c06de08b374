"""Serving registered models over gRPC with real clients: answers, errors, logging, swaps."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.common.auth import Scope
from services.common.proto.inference import grpc_service_pb2 as oip
from tests.integration.serving.conftest import Fitted, Stack, features_request, output


async def test_a_registered_model_is_served_with_contents_and_raw_tensors(
    stack: Stack, model_name: str, model_a: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    rows = model_a.X[:5]
    for raw in (True, False):
        response = await stack.infer(features_request(model_name, rows, raw=raw, request_id="r1"))
        assert (response.model_name, response.model_version, response.id) == (model_name, "1", "r1")
        assert bool(response.raw_output_contents) is raw
        np.testing.assert_allclose(output(response, "probabilities"), model_a.proba(rows))
        assert output(response, "label").tolist() == model_a.estimator.predict(rows).tolist()
    for datatype in ("FP32", "INT64", "INT32"):
        response = await stack.infer(features_request(model_name, np.round(rows), datatype=datatype))
        np.testing.assert_allclose(
            output(response, "probabilities"), model_a.proba(np.round(rows)), rtol=1e-6
        )

    only_label = features_request(model_name, rows)
    only_label.outputs.add(name="label")
    response = await stack.infer(only_label)
    assert [o.name for o in response.outputs] == ["label"]

    pinned = await stack.infer(features_request(model_name, rows, version="1"))
    assert pinned.model_version == "1"


async def test_metadata_readiness_and_repository_index(
    stack: Stack, model_name: str, model_a: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    metadata = stack.metadata()
    assert (await stack.stub.ServerLive(oip.ServerLiveRequest())).live  # public: no token
    assert (await stack.stub.ServerReady(oip.ServerReadyRequest())).ready
    assert (await stack.stub.ModelReady(oip.ModelReadyRequest(name=model_name), metadata=metadata)).ready
    assert (
        await stack.stub.ModelReady(oip.ModelReadyRequest(name=model_name, version="1"), metadata=metadata)
    ).ready
    assert not (
        await stack.stub.ModelReady(oip.ModelReadyRequest(name=model_name, version="9"), metadata=metadata)
    ).ready
    assert not (await stack.stub.ModelReady(oip.ModelReadyRequest(name="nope"), metadata=metadata)).ready

    server = await stack.stub.ServerMetadata(oip.ServerMetadataRequest(), metadata=metadata)
    assert server.name == "mlops-serving" and "model_repository" in server.extensions

    model = await stack.stub.ModelMetadata(oip.ModelMetadataRequest(name=model_name), metadata=metadata)
    assert model.versions == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("features", "FP64", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("probabilities", "FP64", [-1, 2]),
        ("label", "BYTES", [-1]),
        # A logistic regression can explain its answers, on request.
        ("contributions", "FP64", [-1, 4]),
        ("contributions_base", "FP64", [-1]),
    ]
    assert model.platform == "scikit-learn"

    index = await stack.stub.RepositoryIndex(oip.RepositoryIndexRequest(ready=True), metadata=metadata)
    entry = next(m for m in index.models if m.name == model_name)
    assert (entry.version, entry.state, entry.reason) == ("1", "READY", "production")


async def expect_error(
    stack: Stack, request: oip.ModelInferRequest, code: grpc.StatusCode, *phrases: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.infer(request)
    assert caught.value.code() == code, caught.value.details()
    for phrase in phrases:
        assert phrase in (caught.value.details() or ""), caught.value.details()


async def test_bad_requests_get_precise_status_codes(stack: Stack, model_name: str, model_a: Fitted) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    rows = model_a.X[:2]

    await expect_error(
        stack,
        features_request(model_name, model_a.X[:2, :3]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'features': expected shape [-1, 4], got [2, 3]",
    )
    wrong_dtype = features_request(model_name, rows)
    wrong_dtype.inputs[0].datatype = "BYTES"
    await expect_error(stack, wrong_dtype, grpc.StatusCode.INVALID_ARGUMENT, "input 'features'", "BYTES")
    short = features_request(model_name, rows)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-8]
    await expect_error(stack, short, grpc.StatusCode.INVALID_ARGUMENT, "needs 64 bytes", "got 56")
    nan = rows.copy()
    nan[1, 2] = np.nan
    await expect_error(
        stack,
        features_request(model_name, nan),
        grpc.StatusCode.INVALID_ARGUMENT,
        "row 1, feature 'f2' is nan",
    )
    await expect_error(
        stack, features_request("no-such-model", rows), grpc.StatusCode.NOT_FOUND, "model 'no-such-model'"
    )
    await expect_error(
        stack,
        features_request(model_name, rows, version="7"),
        grpc.StatusCode.NOT_FOUND,
        "version 7 of model",
        "served: 1 (production)",
    )
    await expect_error(
        stack,
        features_request(model_name, np.zeros((257, 4))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "257 rows; this server accepts at most 256",
    )
    await expect_error(
        stack, features_request(model_name, np.zeros((40_000, 4))), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    unknown_output = features_request(model_name, rows)
    unknown_output.outputs.add(name="value")
    await expect_error(stack, unknown_output, grpc.StatusCode.INVALID_ARGUMENT, "requested output 'value'")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.ModelInfer(features_request(model_name, rows))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.ModelInfer(features_request(model_name, rows), metadata=stack.metadata(Scope.READ))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "lacks scope 'predict'" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.RepositoryIndex(oip.RepositoryIndexRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # The admin scope implies predict; the server still answers after all of the above.
    response = await stack.infer(features_request(model_name, rows), Scope.ADMIN)
    np.testing.assert_allclose(output(response, "probabilities"), model_a.proba(rows))


async def test_every_request_is_logged_once_with_version_rows_and_outputs(
    stack: Stack, model_name: str, model_a: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    await stack.infer(features_request(model_name, model_a.X[:1], request_id=f"{model_name}-single"))
    await stack.infer(features_request(model_name, model_a.X[:3], request_id=f"{model_name}-batch"))
    records = {
        r.request_id: r for r in await stack.predictions.of([f"{model_name}-single", f"{model_name}-batch"])
    }

    single = records[f"{model_name}-single"]
    assert (single.model_name, single.model_version, single.route, single.shadow) == (
        model_name,
        1,
        "production",
        False,
    )
    assert list(single.feature_names) == ["f0", "f1", "f2", "f3"]
    assert [r.id for r in single.rows] == [f"{model_name}-single"]
    np.testing.assert_allclose(single.rows[0].features, model_a.X[0])
    np.testing.assert_allclose(single.rows[0].probabilities, model_a.proba(model_a.X[:1])[0])
    assert single.rows[0].label == model_a.estimator.predict(model_a.X[:1])[0]
    assert single.latency_us > 0 and single.occurred_at.seconds > 0

    # Keyed by request id and partitioned as aiokafka and the Java client do (murmur2), so a
    # prediction shares its partition with the label keyed by the same event id.
    partitions = sorted(set(range(4)))
    for request_id in records:
        assert stack.predictions.partitions[request_id] == DefaultPartitioner()(
            request_id.encode(), partitions, partitions
        )

    batch = records[f"{model_name}-batch"]
    assert [r.id for r in batch.rows] == [f"{model_name}-batch/{i}" for i in range(3)]
    # Refused requests are not logged.
    assert sum(1 for r in stack.predictions.received if r.model_name == model_name) == 2


async def test_promotion_swaps_and_rollback_swaps_back_on_events(
    stack: Stack, model_name: str, model_a: Fitted, model_b: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    rows = model_a.X[:4]

    await stack.register(model_name, model_b)  # gates pass: the registry promotes it
    await stack.served(model_name, production=2)
    response = await stack.infer(features_request(model_name, rows))
    assert response.model_version == "2"
    np.testing.assert_allclose(output(response, "probabilities"), model_b.proba(rows))

    await stack.admin.rollback(model_name)
    await stack.served(model_name, production=1)
    response = await stack.infer(features_request(model_name, rows))
    assert response.model_version == "1"
    np.testing.assert_allclose(output(response, "probabilities"), model_a.proba(rows))

    await stack.admin.delete_alias(model_name, "production")
    await stack.gone(model_name)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.infer(features_request(model_name, rows))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_shadow_answers_are_published_beside_production_and_never_returned(
    stack: Stack, model_name: str, model_a: Fitted, model_b: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.register(model_name, model_b, gates_passed=False, tags={"rollout": "shadow"})
    await stack.admin.set_alias(model_name, "candidate", 2)
    await stack.served(model_name, production=1, candidate=2)
    rows = model_a.X[:2]
    request_id = f"{model_name}-shadowed"
    response = await stack.infer(features_request(model_name, rows, request_id=request_id))
    assert response.model_version == "1"
    np.testing.assert_allclose(output(response, "probabilities"), model_a.proba(rows))

    await stack.predictions.wait_until(lambda rs: sum(r.request_id == request_id for r in rs) == 2)
    records = {r.shadow: r for r in stack.predictions.received if r.request_id == request_id}
    assert (records[False].model_version, records[False].route) == (1, "production")
    assert (records[True].model_version, records[True].route) == (2, "shadow")
    np.testing.assert_allclose([r.probabilities for r in records[True].rows], model_b.proba(rows))

    pinned = await stack.infer(features_request(model_name, rows, version="2"))
    assert pinned.model_version == "2"
    by_alias = features_request(model_name, rows)
    by_alias.parameters["alias"].string_param = "candidate"
    assert (await stack.infer(by_alias)).model_version == "2"


async def test_a_canary_takes_its_share_and_a_routing_key_sticks(
    stack: Stack, model_name: str, model_a: Fitted, model_b: Fitted
) -> None:
    await stack.admin.create_model(model_name, tags={"rollout": "canary", "canary_share": "0.5"})
    await stack.register(model_name, model_a)
    await stack.register(model_name, model_b, gates_passed=False)
    await stack.admin.set_alias(model_name, "candidate", 2)
    await stack.served(model_name, production=1, candidate=2)
    rows = model_a.X[:1]
    versions = [(await stack.infer(features_request(model_name, rows))).model_version for _ in range(60)]
    assert 10 < versions.count("2") < 50
    keyed = features_request(model_name, rows)
    keyed.parameters["routing_key"].string_param = "customer-42"
    assert len({(await stack.infer(keyed)).model_version for _ in range(20)}) == 1
