"""The same protocol over HTTP/JSON: answers, errors with the gRPC messages, health and metrics."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import numpy as np

from services.common.auth import Scope
from services.common.errors import Kind
from tests.helpers.problems import problem_of
from tests.integration.serving.conftest import Fitted, Stack


def body(rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "features", "datatype": "FP64", "shape": list(rows.shape), "data": rows.tolist()}
        ],
        **extra,
    }


async def test_inference_and_metadata_over_http(
    stack: Stack, http: httpx.AsyncClient, model_name: str, model_a: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    rows = model_a.X[:3]
    response = await http.post(f"/v2/models/{model_name}/infer", json=body(rows, id="h1"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (model_name, "1", "h1")
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["probabilities"]["shape"] == [3, 2]
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (3, 2)), model_a.proba(rows))
    assert outputs["label"]["data"] == model_a.estimator.predict(rows).tolist()

    per_feature = {
        "inputs": [
            {"name": f"f{i}", "datatype": "FP64", "shape": [3], "data": rows[:, i].tolist()} for i in range(4)
        ],
        "outputs": [{"name": "label"}],
    }
    response = await http.post(f"/v2/models/{model_name}/versions/1/infer", json=per_feature)
    assert [o["name"] for o in response.json()["outputs"]] == ["label"]

    metadata = (await http.get(f"/v2/models/{model_name}")).json()
    assert metadata["versions"] == ["1"] and metadata["inputs"][0]["shape"] == [-1, 4]
    assert (await http.get(f"/v2/models/{model_name}/ready")).json() == {"name": model_name, "ready": True}
    assert (await http.get("/v2")).json()["extensions"] == ["model_repository"]
    index = (await http.post("/v2/repository/index", json={"ready": True})).json()
    assert {"name": model_name, "version": "1", "state": "READY", "reason": "production"} in index


async def test_http_errors_carry_the_status_and_the_message(
    stack: Stack, http: httpx.AsyncClient, model_name: str, model_a: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    url = f"/v2/models/{model_name}/infer"

    async def error(response: httpx.Response, status: int, phrase: str) -> None:
        assert response.status_code == status, response.text
        assert phrase in response.json()["error"]

    await error(await http.post(url, json=body(model_a.X[:2, :3])), 400, "expected shape [-1, 4], got [2, 3]")
    nan = model_a.X[:1].copy()
    nan[0, 0] = math.nan
    # Python's json writes NaN as the bare word many clients send.
    await error(await http.post(url, content=json.dumps(body(nan))), 400, "row 0, feature 'f0' is nan")
    await error(await http.post(url, json={"inputs": "x"}), 400, "inputs: Input should be a valid array")
    await error(await http.post(url, content=b"{not json"), 400, "Invalid JSON")
    await error(
        await http.post("/v2/models/nope/infer", json=body(model_a.X[:1])), 404, "model 'nope' is not served"
    )
    await error(
        await http.post(f"/v2/models/{model_name}/versions/5/infer", json=body(model_a.X[:1])),
        404,
        "version 5",
    )
    await error(await http.post(url, json=body(np.zeros((300, 4)))), 413, "300 rows")
    await error(await http.post(url, content=b" " * (1024 * 1024 + 1)), 413, "exceeds the limit")
    bad_token = await http.post(url, json=body(model_a.X[:1]), headers={"authorization": "Bearer nope"})
    await error(bad_token, 401, "invalid token")
    wrong_scope = await http.post(
        url, json=body(model_a.X[:1]), headers={"authorization": f"Bearer {stack.infra.token(Scope.READ)}"}
    )
    await error(wrong_scope, 403, "lacks scope 'predict'")


async def test_refusals_answer_the_platform_problem_body_with_the_protocols_error(
    stack: Stack, http: httpx.AsyncClient, model_name: str, model_a: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    url = f"/v2/models/{model_name}/infer"
    invalid = problem_of(await http.post(url, json={"inputs": "x"}), 400, Kind.INVALID)
    assert (invalid["field"], invalid["error"]) == ("inputs", "inputs: Input should be a valid array")
    problem_of(await http.post(url, json=body(np.zeros((300, 4)))), 413, Kind.TOO_LARGE)
    missing = problem_of(
        await http.post("/v2/models/nope/infer", json=body(model_a.X[:1])), 404, Kind.NOT_FOUND
    )
    assert missing["error"] == "model 'nope' is not served"
    # Model readiness keeps the protocol's members beside the problem's.
    not_ready = problem_of(await http.get("/v2/models/nope/ready"), 404, Kind.NOT_FOUND)
    assert (not_ready["name"], not_ready["ready"]) == ("nope", False)


async def test_health_is_public_and_metrics_count_requests_by_model_version_and_code(
    stack: Stack, http: httpx.AsyncClient, model_name: str, model_a: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    await http.post(f"/v2/models/{model_name}/infer", json=body(model_a.X[:2]))
    await http.post(f"/v2/models/{model_name}/infer", json=body(model_a.X[:2, :1]))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.serving.http_port}") as anonymous:
        assert (await anonymous.get("/v2/health/live")).json() == {"live": True}
        assert (await anonymous.get("/v2/health/ready")).json() == {"ready": True}
        assert (await anonymous.get("/health/ready")).status_code == 200
        metrics = (await anonymous.get("/metrics")).text
    assert f'mlops_serving_requests_total{{code="OK",model="{model_name}",version="1"}} 1.0' in metrics
    assert (
        f'mlops_serving_requests_total{{code="INVALID_ARGUMENT",model="{model_name}",version="1"}} 1.0'
        in metrics
    )
    assert f'mlops_serving_request_seconds_count{{code="OK",model="{model_name}",version="1"}} 1.0' in metrics
    assert f'mlops_serving_batch_rows_count{{model="{model_name}",version="1"}}' in metrics
    assert 'mlops_serving_models{state="READY"}' in metrics
