"""The platform error model at the HTTP edge: one problem-details body for every error.

Every error a :class:`PlatformApp` answers is an RFC 9457 body
(:func:`~services.common.errors.problem`, media type ``application/problem+json``):
a :class:`~services.common.errors.PlatformError` a route raises, an ``HTTPException``
(an unknown route, say), a request FastAPI could not validate (422, ``field`` naming
the first bad input) and an unexpected failure (500, without its details). The OpenAPI
document says so (:func:`with_problem_bodies`), and routes declare theirs with
:func:`problem_responses`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from services.common.errors import (
    PROBLEM_MEDIA_TYPE,
    Internal,
    InvalidArgument,
    Kind,
    PlatformError,
    error_of,
    kind_of_http_status,
    problem,
)

RETRY_AFTER_SECONDS = 1
"""What ``Retry-After`` tells a client refused with a retryable kind (429, 503)."""
SCHEMA_NAME = "ProblemDetails"
_SCHEMA_REF = f"#/components/schemas/{SCHEMA_NAME}"
_FASTAPI_VALIDATION_REF = "#/components/schemas/HTTPValidationError"
"""What FastAPI declares a 422 answers; :class:`PlatformApp` answers a problem body instead."""
_EDGE_STATUSES = frozenset({"400", "401", "403", "422"})


class ProblemDetails(BaseModel):
    """An error, as every platform HTTP API answers one (RFC 9457 problem details)."""

    type: str = Field(description="`urn:mlops:error:<kind>`.")
    title: str = Field(description="The HTTP status's phrase.")
    status: int
    detail: str = Field(description="What went wrong, for a person.")
    kind: str = Field(description="invalid, not_found, conflict, permission, unavailable ...")
    code: str = Field(description="The gRPC status the same failure gets over gRPC.")
    field: str = Field("", description="The input to fix, when one is to blame.")
    error: str = Field(description="`detail` again, as Open Inference Protocol clients read it.")
    instance: str = Field("", description="The request's path.")


def problem_responses(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` for the error statuses it documents, each a problem body."""
    return {
        status: {"description": text, "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _SCHEMA_REF}}}}
        for status, text in descriptions.items()
    }


def problem_response(
    error: PlatformError,
    request: Request,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    members: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """``error`` as a problem-details response (``status`` overrides the kind's), with a
    route's own extension ``members`` added to the body."""
    body = {**problem(error, status=status, instance=request.url.path), **(members or {})}
    extra = dict(headers or {})
    if error.kind is Kind.UNAUTHENTICATED:
        extra.setdefault("WWW-Authenticate", "Bearer")
    if error.kind.retryable:
        extra.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_MEDIA_TYPE, headers=extra)


_LOCATIONS = ("body", "query", "path", "header", "cookie")
MAX_REPORTED = 10
"""Validation errors named in one problem's detail (the field is the first one's)."""


def field_of(loc: Sequence[str | int]) -> str:
    """The field a validation error's location names, in the platform's spelling (the one
    domain errors use, without FastAPI's ``body``/``query``/``path`` prefix).

    >>> field_of(("body", "metadata", "artifact", "size_bytes"))
    'metadata.artifact.size_bytes'
    >>> field_of(("body", "estimators", 0, "family")), field_of(("query", "page_size")), field_of(("body",))
    ('estimators[0].family', 'page_size', 'body')
    """
    parts = list(loc)
    where = str(parts.pop(0)) if parts and parts[0] in _LOCATIONS else ""
    field = ""
    for part in parts:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    return field or where


def validation_error(exc: RequestValidationError) -> InvalidArgument:
    """What FastAPI found wrong with a request, each field named; ``field`` is the first."""
    named = []
    for error in exc.errors()[:MAX_REPORTED]:
        loc = error.get("loc", ())
        # A JSON syntax error's location is a character position, not a field.
        field = field_of(loc[:1] if error.get("type") == "json_invalid" else loc)
        named.append((field, f"{field or 'request'}: {error.get('msg', 'invalid')}"))
    if not named:
        return InvalidArgument("the request is not valid")
    return InvalidArgument("; ".join(text for _, text in named), field=named[0][0])


async def _platform_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PlatformError)
    return problem_response(exc, request)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = error_of(kind_of_http_status(exc.status_code), str(exc.detail))
    return problem_response(error, request, status=exc.status_code, headers=exc.headers)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem_response(validation_error(exc), request, status=422)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Starlette raises the exception again after this answer, so the server still logs it.
    return problem_response(Internal("internal error; see the server log"), request)


class PlatformApp(FastAPI):
    """A FastAPI app whose every error answer, and its OpenAPI document, is a problem body."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_exception_handler(PlatformError, _platform_error)
        self.add_exception_handler(HTTPException, _http_error)
        self.add_exception_handler(RequestValidationError, _invalid_request)
        self.add_exception_handler(Exception, _unexpected)

    def openapi(self) -> dict[str, Any]:
        return with_problem_bodies(super().openapi())


def with_problem_bodies(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` declaring the problem body wherever the shared handlers may answer one
    whatever the route does (idempotent).

    Those are the statuses an operation already declares among 400 (a body FastAPI cannot
    parse), 401 and 403 (``require_scope``) and 422 (FastAPI's validation, whose own
    declaration is replaced); a route declares the statuses its own errors answer with
    :func:`problem_responses`.
    """
    for path in document.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):  # a path's shared "parameters"
                continue
            responses: dict[str, Any] = operation.get("responses", {})
            for status in _EDGE_STATUSES.intersection(responses):
                content = responses[status].setdefault("content", {})
                declared = content.get("application/json", {}).get("schema", {})
                if declared.get("$ref") == _FASTAPI_VALIDATION_REF:
                    del content["application/json"]
                content.setdefault(PROBLEM_MEDIA_TYPE, {"schema": {"$ref": _SCHEMA_REF}})
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if _SCHEMA_REF in json.dumps(document):
        schemas.setdefault(SCHEMA_NAME, ProblemDetails.model_json_schema())
    # FastAPI's validation schemas, once nothing refers to them (the second refers to the first).
    for name in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{name}" not in json.dumps(document):
            schemas.pop(name, None)
    return document
