"""What every platform HTTP API answers an error with: one RFC 9457 problem-details body."""

from __future__ import annotations

from typing import Any

import httpx

from services.common.errors import PROBLEM_MEDIA_TYPE, Kind

MEMBERS = {"type", "title", "status", "detail", "kind", "code", "field", "error", "instance"}


def problem_of(response: httpx.Response, status: int, kind: Kind) -> dict[str, Any]:
    """``response``'s problem body, checked to be one of ``kind`` answered with ``status``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert MEMBERS <= set(body), body
    assert (body["status"], body["kind"], body["code"]) == (status, kind.label, kind.grpc_code)
    assert body["type"] == f"urn:mlops:error:{kind.label}"
    assert body["error"] == body["detail"] and body["instance"] == response.request.url.path
    return body
