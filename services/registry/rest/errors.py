"""Every REST error as one RFC 9457 problem-details body (``application/problem+json``,
built by :func:`services.common.errors.problem`): the registry's platform errors,
FastAPI's request validation (422, ``field`` taken from the error's location), HTTP
errors (401/403 from the token check, unknown routes) and anything unexpected (500,
without its details)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from services.common.errors import (
    PROBLEM_MEDIA_TYPE,
    Internal,
    InvalidArgument,
    PlatformError,
    error_of,
    kind_of_http_status,
    problem,
)
from services.common.logging import get_logger

log = get_logger(__name__)

_LOCATIONS = ("body", "query", "path", "header", "cookie")
MAX_REPORTED = 10
"""Validation errors named in one problem's detail (the field is the first one's)."""


def problem_response(
    error: PlatformError, *, status: int | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``error`` as a problem-details response (``status`` where a route's contract fixes another)."""
    return JSONResponse(
        problem(error, status=status),
        status_code=status or error.kind.http_status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def field_of(loc: Sequence[str | int]) -> str:
    """The field a validation error's location names, in the platform's spelling.

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


def _invalid(errors: Sequence[Mapping[str, Any]]) -> InvalidArgument:
    named = []
    for error in errors[:MAX_REPORTED]:
        loc = error.get("loc", ())
        # A JSON syntax error's location is a character position, not a field.
        field = field_of(loc[:1] if error.get("type") == "json_invalid" else loc)
        named.append((field, f"{field or 'request'}: {error.get('msg', 'invalid')}"))
    if not named:
        return InvalidArgument("the request is invalid")
    return InvalidArgument("; ".join(text for _, text in named), field=named[0][0])


async def _platform_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PlatformError)
    return problem_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(_invalid(exc.errors()), status=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error = error_of(kind_of_http_status(exc.status_code), str(exc.detail))
    return problem_response(error, status=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected_error", path=request.url.path[:512], error=repr(exc))
    return problem_response(Internal("internal error"))


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error ``app`` raises with a problem-details body."""
    app.add_exception_handler(PlatformError, _platform_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
