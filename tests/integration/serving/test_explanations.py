"""Feature contributions over gRPC and HTTP, for models the trainer trained and registered."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from services.common.proto.inference import grpc_service_pb2 as oip
from tests.integration.serving.conftest import Stack, output
from tests.integration.serving.trained import Trained, columns_request, json_columns, train


@pytest.fixture(scope="module")
def linear() -> Trained:
    return train("logistic_regression")


@pytest.fixture(scope="module")
def boosted() -> Trained:
    return train("hist_gradient_boosting")


async def test_a_linear_pipeline_explains_each_row_in_its_log_odds(
    stack: Stack, http: httpx.AsyncClient, model_name: str, linear: Trained
) -> None:
    await stack.admin.create_model(model_name)
    await stack.admin.create_version(linear.described_as(model_name), linear.artifact)
    await stack.served(model_name, production=1)
    X = linear.X
    log_odds = linear.estimator.decision_function(X)

    response = await stack.infer(columns_request(model_name, X, explain=True))
    assert [o.name for o in response.outputs] == [
        "probabilities",
        "label",
        "contributions",
        "contributions_base",
    ]
    contributions = output(response, "contributions")
    assert contributions.shape == (len(X), 4)
    np.testing.assert_allclose(contributions.sum(axis=1) + output(response, "contributions_base"), log_odds)
    np.testing.assert_allclose(output(response, "probabilities"), linear.estimator.predict_proba(X))

    # Asked for by name instead, alone; and not returned when not asked for.
    only = columns_request(model_name, X)
    only.outputs.add(name="contributions")
    response = await stack.infer(only)
    assert [o.name for o in response.outputs] == ["contributions"]
    np.testing.assert_allclose(output(response, "contributions"), contributions)
    plain = await stack.infer(columns_request(model_name, X))
    assert [o.name for o in plain.outputs] == ["probabilities", "label"]

    metadata = await stack.stub.ModelMetadata(
        oip.ModelMetadataRequest(name=model_name), metadata=stack.metadata()
    )
    declared = {t.name: (t.datatype, list(t.shape)) for t in metadata.outputs}
    assert declared["contributions"] == ("FP64", [-1, 4])
    assert declared["contributions_base"] == ("FP64", [-1])

    # The same over HTTP/JSON.
    answer = await http.post(
        f"/v2/models/{model_name}/infer",
        json={
            "inputs": json_columns(X),
            "parameters": {"explain": True},
            "outputs": [{"name": "contributions"}],
        },
    )
    assert answer.status_code == 200, answer.text
    # explain adds the base to the outputs asked for.
    tensor, base = answer.json()["outputs"]
    assert (tensor["name"], tensor["shape"]) == ("contributions", [len(X), 4])
    assert (base["name"], base["shape"]) == ("contributions_base", [len(X)])
    np.testing.assert_allclose(np.reshape(tensor["data"], (len(X), 4)), contributions)
    refused = await http.post(
        f"/v2/models/{model_name}/infer", json={"inputs": json_columns(X), "parameters": {"explain": "yes"}}
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "parameter 'explain' must be a boolean, got str"


async def test_histogram_boosting_explains_each_row_in_its_raw_score(
    stack: Stack, http: httpx.AsyncClient, model_name: str, boosted: Trained
) -> None:
    await stack.admin.create_model(model_name)
    await stack.admin.create_version(boosted.described_as(model_name), boosted.artifact)
    await stack.served(model_name, production=1)
    raw_score = boosted.estimator.decision_function(boosted.X)

    response = await stack.infer(columns_request(model_name, boosted.X, explain=True))
    total = output(response, "contributions").sum(axis=1) + output(response, "contributions_base")
    np.testing.assert_allclose(total, raw_score, atol=1e-9)
    np.testing.assert_allclose(output(response, "probabilities"), boosted.estimator.predict_proba(boosted.X))

    answer = await http.post(
        f"/v2/models/{model_name}/infer",
        json={"inputs": json_columns(boosted.X), "parameters": {"explain": True}},
    )
    assert answer.status_code == 200, answer.text
    by_name = {o["name"]: o for o in answer.json()["outputs"]}
    np.testing.assert_allclose(
        np.reshape(by_name["contributions"]["data"], (len(boosted.X), 4)).sum(axis=1)
        + np.array(by_name["contributions_base"]["data"]),
        raw_score,
        atol=1e-9,
    )
    metadata = await stack.stub.ModelMetadata(
        oip.ModelMetadataRequest(name=model_name), metadata=stack.metadata()
    )
    assert [t.name for t in metadata.outputs] == [
        "probabilities",
        "label",
        "contributions",
        "contributions_base",
    ]
