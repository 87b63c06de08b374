"""The REST mirror of ``mlops.v1.RegistryService`` (FastAPI; OpenAPI at ``/openapi.json``).

Same registry, same checks, same audit trail as the gRPC API; each route is named after
the RPC it mirrors (the audit log's ``action``). The routes live in
:mod:`services.registry.rest`, one router per concern; this module puts them together
with what applies to all of them: request ids, the upload size check, audited denials,
and errors as RFC 9457 problem details (``application/problem+json``) whose status
matches the error kind's gRPC code: INVALID_ARGUMENT 400, UNAUTHENTICATED 401,
PERMISSION_DENIED 403, NOT_FOUND 404, ALREADY_EXISTS / ABORTED (lost compare-and-set) /
FAILED_PRECONDITION 409, RESOURCE_EXHAUSTED 413, UNAVAILABLE 503; malformed JSON or
parameters get 422 naming the field.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response

from services.common.auth import AuthError, TokenVerifier
from services.common.errors import InvalidArgument, TooLarge
from services.common.http import create_app
from services.common.http_errors import problem_response, problem_responses
from services.registry.registry import Actor, Registry
from services.registry.rest import access, aliases, artifacts, audit, models, runs, specs, versions
from services.registry.rest.deps import operation_name, request_id
from services.registry.settings import RegistrySettings

REQUEST_ID_HEADER = "x-request-id"
# Room for the metadata part and multipart framing on top of the largest artifact.
UPLOAD_OVERHEAD_BYTES = 8 * 1024 * 1024
_UPLOAD_PATH = re.compile(r"/v1/models/[^/]+/versions/?")

ERRORS = problem_responses(
    {
        400: "Bad input; `field` names what to fix.",
        401: "Missing or invalid bearer token.",
        403: "The token lacks the scope, or a rule forbids the change.",
        404: "Unknown model, version, alias or spec.",
        409: "Exists already, lost a compare-and-set, or wrong state.",
        422: "Malformed JSON or parameters; `field` names the first.",
        503: "The registry's database is unavailable: retry later.",
    }
)


def create_http_app(
    registry: Registry, settings: RegistrySettings, verifier: TokenVerifier, *, ready: Callable[[], bool]
) -> FastAPI:
    async def record_denial(request: Request, exc: AuthError) -> None:
        where = request_id(request)
        await registry.record_refusal(
            Actor(exc.principal, where, "http") if exc.principal else Actor.anonymous(where, "http"),
            operation_name(request),
            request.url.path[:512],
            "denied" if exc.forbidden else "unauthenticated",
            str(exc),
        )

    app = create_app(
        "MLOps model registry",
        "1.0",
        verifier=verifier,
        ready=ready,
        on_denied=record_denial,
        description=(
            "Models, versions, aliases (compare-and-set), approvals, rollback, lineage, specs, artifacts "
            "addressed by SHA-256 and the audit log. Mirrors the gRPC service `mlops.v1.RegistryService`."
        ),
    )
    app.state.registry = registry
    app.state.settings = settings

    @app.middleware("http")
    async def bind_request(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Give every request an id (the caller's, if it sent one) and bound artifact uploads
        before their body is read."""
        request.state.request_id = request.headers.get(REQUEST_ID_HEADER, "")[:128] or uuid.uuid4().hex
        if request.method == "POST" and _UPLOAD_PATH.fullmatch(request.url.path):
            length = request.headers.get("content-length")
            if length is None:
                error = InvalidArgument("Content-Length is required for uploads", field="Content-Length")
                return problem_response(error, request, status=411)
            if not length.isdigit():
                return problem_response(
                    InvalidArgument("Content-Length is not a number", field="Content-Length"), request
                )
            if int(length) > settings.max_artifact_bytes + UPLOAD_OVERHEAD_BYTES:
                return problem_response(
                    TooLarge(
                        f"upload over the limit of {settings.max_artifact_bytes} artifact bytes",
                        field="Content-Length",
                    ),
                    request,
                )
        response = await call_next(request)
        response.headers[REQUEST_ID_HEADER] = request.state.request_id
        return response

    v1 = APIRouter(prefix="/v1", responses=ERRORS)
    for concern in (models, versions, artifacts, aliases, specs, audit, runs, access):
        v1.include_router(concern.router)
    app.include_router(v1)
    app.include_router(access.well_known)
    return app
