"""The REST mirror: same registry, matching status codes, fields named in errors,
artifacts streamed with their digest, denials audited."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import TypedDict

import httpx
import pytest
from google.protobuf import json_format

from services.common.auth import Scope
from services.common.clients.registry import RegistryClient
from services.common.errors import NotFound
from services.registry.app import RegistryApp
from tests.conftest import Infra
from tests.helpers.artifacts import model_bytes, random_artifact
from tests.integration.registry.helpers import metadata


class Upload(TypedDict):
    """The multipart form of a version upload, as keyword arguments to ``httpx``'s ``post``."""

    data: dict[str, str]
    files: dict[str, tuple[str, bytes]]


def upload(name: str, payload: bytes, **changes: object) -> Upload:
    meta = json_format.MessageToDict(metadata(name, payload), preserving_proto_field_name=True)
    meta.update(changes)
    return {"data": {"metadata": json.dumps(meta)}, "files": {"artifact": ("model.skops", payload)}}


async def test_lifecycle_over_rest(http: httpx.AsyncClient, model_name: str) -> None:
    created = await http.post("/v1/models", json={"name": model_name, "tags": {"team": "web"}})
    assert created.status_code == 201, created.text
    assert created.json()["promotion_policy"] == "PROMOTION_POLICY_AUTO"
    assert (await http.post("/v1/models", json={"name": model_name})).status_code == 409

    artifact = random_artifact(200_000)
    response = await http.post(f"/v1/models/{model_name}/versions", **upload(model_name, artifact))
    assert response.status_code == 201, response.text
    version = response.json()
    assert (version["version"], version["status"], version["aliases"]) == (
        1,
        "VERSION_STATUS_READY",
        ["production"],
    )
    assert version["created_by"] == "web-admin"

    downloaded = await http.get(f"/v1/models/{model_name}/aliases/production/artifact")
    assert downloaded.status_code == 200 and downloaded.content == artifact
    digest = hashlib.sha256(artifact)
    assert downloaded.headers["x-artifact-sha256"] == digest.hexdigest()
    assert downloaded.headers["repr-digest"] == f"sha-256=:{base64.b64encode(digest.digest()).decode()}:"
    assert downloaded.headers["x-model-version"] == "1"

    second = random_artifact(1000)
    assert (
        await http.post(f"/v1/models/{model_name}/versions", **upload(model_name, second))
    ).status_code == 201
    conflict = await http.put(
        f"/v1/models/{model_name}/aliases/production", json={"version": 1, "expected_version": 1}
    )
    assert conflict.status_code == 409 and conflict.json()["code"] == "ABORTED"
    moved = await http.put(
        f"/v1/models/{model_name}/aliases/production",
        json={"version": 1, "expected_version": 2, "reason": "v2 bad"},
    )
    assert moved.status_code == 200 and moved.json()["aliases"] == {"production": 1}
    rolled = await http.post(f"/v1/models/{model_name}/rollback")
    assert rolled.status_code == 200 and (rolled.json()["from_version"], rolled.json()["to_version"]) == (
        1,
        2,
    )
    archived = await http.post(f"/v1/models/{model_name}/versions/1/archive", json={"reason": "old"})
    assert archived.json()["status"] == "VERSION_STATUS_ARCHIVED"
    history = (
        await http.get(f"/v1/models/{model_name}/alias-history", params={"alias": "production"})
    ).json()
    assert [c["version"] for c in history["changes"]] == [2, 1, 2, 1]

    found = await http.get("/v1/versions", params={"model_name": model_name, "metric": "accuracy>=0.5"})
    assert [v["version"] for v in found.json()["versions"]] == [2, 1]
    lineage = (await http.get(f"/v1/models/{model_name}/versions/2/lineage")).json()
    assert lineage["version"]["lineage"]["data"]["content_sha256"] == "ab" * 32

    spec = await http.post(f"/v1/models/{model_name}/specs", json={"dataset": "demo", "metric": "accuracy"})
    assert spec.status_code == 201 and spec.json()["spec_version"] == 1
    assert (await http.get(f"/v1/models/{model_name}/specs/0")).json()["model_name"] == model_name


async def test_rest_and_grpc_see_the_same_registry(
    http: httpx.AsyncClient, admin: RegistryClient, model_name: str
) -> None:
    await admin.create_model(model_name, "made over gRPC")
    artifact = random_artifact(500)
    await admin.create_version(metadata(model_name, artifact), artifact)
    model = (await http.get(f"/v1/models/{model_name}")).json()
    assert (model["description"], model["aliases"]) == ("made over gRPC", {"production": 1})
    assert (await http.get(f"/v1/models/{model_name}/versions/1/artifact")).content == artifact


async def test_bad_uploads_are_refused_with_the_field_named(
    http: httpx.AsyncClient, registry_app: RegistryApp, model_name: str
) -> None:
    await http.post("/v1/models", json={"name": model_name})
    artifact = random_artifact(3000)

    wrong = await http.post(
        f"/v1/models/{model_name}/versions",
        **upload(
            model_name,
            artifact,
            artifact={"sha256": "0" * 64, "size_bytes": len(artifact), "format": "skops"},
        ),
    )
    assert wrong.status_code == 400 and wrong.json()["field"] == "metadata.artifact.sha256"
    other = await http.post(f"/v1/models/{model_name}/versions", **upload("another-model", artifact))
    assert other.status_code == 400 and other.json()["field"] == "metadata.model_name"
    malformed = await http.post(
        f"/v1/models/{model_name}/versions",
        data={"metadata": '{"artifact": {"size_bytes": "many"}}'},
        files={"artifact": ("a", artifact)},
    )
    assert malformed.status_code == 422
    assert (malformed.json()["kind"], malformed.json()["field"]) == (
        "invalid",
        "metadata.artifact.size_bytes",
    )
    not_json = await http.post(
        f"/v1/models/{model_name}/versions", data={"metadata": "{"}, files={"artifact": ("a", artifact)}
    )
    assert not_json.status_code == 422
    # The limit applies before a byte of the body is read: announce 4x the limit, send nothing.
    reader, writer = await asyncio.open_connection("127.0.0.1", registry_app.http_port)
    oversized = registry_app.settings.max_artifact_bytes * 4
    writer.write(
        f"POST /v1/models/{model_name}/versions HTTP/1.1\r\nHost: registry\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {oversized}\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] == b"413"
    assert (await http.get(f"/v1/models/{model_name}")).json()["latest_version"] == 0


@pytest.mark.parametrize(
    ("method", "path", "payload", "status"),
    [
        ("post", "/v1/models", {"name": "a/b"}, 400),
        ("post", "/v1/models", {"name": "ok", "unknown": 1}, 422),
        ("post", "/v1/models", {"name": "ok", "promotion_policy": "SOMETIMES"}, 422),
        ("get", "/v1/models/does-not-exist-anywhere", None, 404),
        ("get", "/v1/models/x%0Ay", None, 400),
        ("get", "/v1/models/demo/versions/0", None, 422),
        ("get", "/v1/models/demo/versions/99999999999999999999", None, 422),
        ("get", "/v1/versions?metric=accuracy~0.5", None, 400),
        ("get", "/v1/versions?metric=accuracy>=nan", None, 400),
        ("get", "/v1/versions?status=SOMEWHAT", None, 400),
        ("get", "/v1/models?page_token=%F0%9F", None, 400),
        ("get", "/v1/audit?since=2026-01-01T00:00:00", None, 422),
        ("put", "/v1/models/demo/aliases/production", {"version": "one"}, 422),
    ],
)
async def test_bad_requests_get_a_4xx(
    http: httpx.AsyncClient, method: str, path: str, payload: object, status: int
) -> None:
    response = await http.request(method, path, json=payload)
    assert response.status_code == status, response.text


async def test_tokens_and_scopes_over_rest_are_enforced_and_audited(
    registry_app: RegistryApp, infra: Infra, http: httpx.AsyncClient, model_name: str
) -> None:
    base = f"http://127.0.0.1:{registry_app.http_port}"
    async with httpx.AsyncClient(base_url=base) as anonymous:
        assert (await anonymous.get("/v1/models")).status_code == 401
        assert (await anonymous.get("/v1/models", headers={"Authorization": "Basic abc"})).status_code == 401
        assert (await anonymous.get("/health/ready")).status_code == 200
        assert (await anonymous.get("/openapi.json")).status_code == 200
        reader = {
            "Authorization": f"Bearer {infra.token(Scope.READ, subject='web-reader')}",
            "X-Request-Id": model_name,
        }
        denied = await anonymous.post("/v1/models", json={"name": model_name}, headers=reader)
        assert denied.status_code == 403 and denied.headers["x-request-id"] == model_name
    records = (await http.get("/v1/audit", params={"request_id": model_name})).json()["records"]
    assert [(r["actor"], r["action"], r["outcome"], r["transport"]) for r in records] == [
        ("web-reader", "CreateModel", "denied", "http")
    ]


async def test_metrics_count_calls_and_relayed_events(
    registry_app: RegistryApp, http: httpx.AsyncClient, admin: RegistryClient, model_name: str
) -> None:
    await admin.create_model(model_name)
    await expect_grpc_not_found(admin, model_name)
    assert registry_app.registry is not None
    text = (await http.get("/metrics")).text
    assert 'mlops_registry_requests_total{method="CreateModel",outcome="ok",transport="grpc"}' in text
    assert (
        'mlops_registry_requests_total{method="GetModelVersion",outcome="not_found",transport="grpc"}' in text
    )
    assert "mlops_registry_events_relayed_total" in text


async def expect_grpc_not_found(admin: RegistryClient, model_name: str) -> None:
    with pytest.raises(NotFound):
        await admin.get_version(model_name, 99)


PROBLEM_MEMBERS = {"type", "title", "status", "detail", "kind", "code", "field", "error", "instance"}


def assert_problem(response: httpx.Response, status: int, kind: str, field: str = "") -> dict[str, object]:
    """``response`` is an RFC 9457 problem of ``kind`` naming ``field``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert set(body) == PROBLEM_MEMBERS
    assert (body["status"], body["kind"], body["type"]) == (status, kind, f"urn:mlops:error:{kind}")
    assert body["field"] == field and body["detail"] == body["error"] and body["detail"]
    return body


async def raw_upload(port: int, path: str, headers: str) -> httpx.Response:
    """An upload's headers sent as they are (httpx would fix them), and the answer read back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: registry\r\n{headers}\r\n".encode())
        await writer.drain()
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode().split("\r\n")
        fields = dict(line.split(": ", 1) for line in head[1:] if line)
        body = await reader.readexactly(int(fields["content-length"]))
    finally:
        writer.close()
    return httpx.Response(int(head[0].split()[1]), headers=fields, content=body)


async def test_every_error_is_a_problem_body(
    http: httpx.AsyncClient, registry_app: RegistryApp, model_name: str
) -> None:
    assert_problem(await http.get(f"/v1/models/{model_name}"), 404, "not_found")
    assert_problem(await http.post("/v1/models", json={"name": "a/b"}), 400, "invalid", "name")
    await http.post("/v1/models", json={"name": model_name})
    assert_problem(await http.post("/v1/models", json={"name": model_name}), 409, "already_exists")
    assert_problem(
        await http.put(f"/v1/models/{model_name}/aliases/staging", json={"version": 1}), 404, "not_found"
    )
    created = await http.post(
        f"/v1/models/{model_name}/versions",
        **upload(model_name, model_bytes("v1")),
    )
    assert created.status_code == 201
    conflict = await http.put(
        f"/v1/models/{model_name}/aliases/production", json={"version": 1, "expected_version": -1}
    )
    assert assert_problem(conflict, 409, "conflict")["code"] == "ABORTED"
    assert_problem(await http.get(f"/v1/models/{model_name}/versions/0"), 422, "invalid", "version")
    assert_problem(
        await http.post("/v1/models", json={"name": "ok", "unknown": 1}), 422, "invalid", "unknown"
    )
    assert_problem(
        await http.post("/v1/models", content=b"{", headers={"content-type": "application/json"}),
        422,
        "invalid",
        "body",
    )
    oversized = await http.post(
        f"/v1/models/{model_name}/versions",
        **upload(
            model_name,
            model_bytes("v2"),
            artifact={"sha256": "0" * 64, "size_bytes": 10**10, "format": "skops"},
        ),
    )
    assert_problem(oversized, 413, "too_large", "metadata.artifact.size_bytes")
    path = f"/v1/models/{model_name}/versions"
    limit = registry_app.settings.max_artifact_bytes * 4
    announced = await raw_upload(registry_app.http_port, path, f"Content-Length: {limit}\r\n")
    assert_problem(announced, 413, "too_large", "Content-Length")
    unannounced = await raw_upload(registry_app.http_port, path, "Transfer-Encoding: chunked\r\n")
    assert_problem(unannounced, 411, "invalid", "Content-Length")
    async with httpx.AsyncClient(base_url=str(http.base_url)) as anonymous:
        denied = await anonymous.get("/v1/models")
    assert_problem(denied, 401, "unauthenticated")
    assert denied.headers["www-authenticate"] == "Bearer"
    assert_problem(await http.get("/v1/no-such-route"), 404, "not_found")


async def test_the_openapi_document_declares_problem_bodies(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status[0] in "45" and "content" in response:
                    assert list(response["content"]) == ["application/problem+json"], (path, method, status)
