"""One vocabulary for what goes wrong, whatever the transport.

Domain code raises a :class:`PlatformError` subclass named by its :class:`Kind`, with a
message a person can act on and, for bad input, the field to fix. Each edge translates
once, from the tables here: gRPC servers abort with the kind's status code and carry the
kind and field in trailing metadata; HTTP apps answer with one RFC 9457 problem-details
body (:func:`problem`); the shared gRPC clients turn a status back into the same kind
(:func:`from_status`), so callers catch ``NotFound`` instead of switching on status codes.
Nothing here imports a transport: domain modules can raise these without importing grpc.

>>> error = NotFound("model 'churn' does not exist", field="name")
>>> error.kind.grpc_code, error.kind.http_status, error.kind.outcome
('NOT_FOUND', 404, 'not_found')
>>> body = problem(error)
>>> body["status"], body["title"], body["field"], body["error"] == body["detail"]
(404, 'Not Found', 'name', True)
>>> type(from_status("ABORTED", "version changed")).__name__
'Conflict'
>>> from_status("RESOURCE_EXHAUSTED", "queue full", kind="exhausted").kind.retryable
True
"""

from __future__ import annotations

from enum import Enum
from http import HTTPStatus
from typing import Any, ClassVar

KIND_METADATA = "mlops-error-kind"
"""gRPC trailing-metadata key carrying the error's kind (two kinds share a status code)."""
FIELD_METADATA = "mlops-error-field"
"""gRPC trailing-metadata key carrying the field an invalid request should fix."""
PROBLEM_MEDIA_TYPE = "application/problem+json"


class Kind(Enum):
    """What went wrong, as a caller decides what to do next.

    Each kind has one gRPC status code (by name), one HTTP status and one audit-log
    outcome; ``retryable`` says whether the same call may succeed later unchanged.
    """

    INVALID = ("invalid", "INVALID_ARGUMENT", 400, "invalid_argument")
    NOT_FOUND = ("not_found", "NOT_FOUND", 404, "not_found")
    ALREADY_EXISTS = ("already_exists", "ALREADY_EXISTS", 409, "already_exists")
    CONFLICT = ("conflict", "ABORTED", 409, "aborted")
    """A compare-and-set lost: read again, then decide."""
    FAILED_PRECONDITION = ("failed_precondition", "FAILED_PRECONDITION", 409, "failed_precondition")
    """The resource's state does not allow the change (archived, not pending ...)."""
    PERMISSION = ("permission", "PERMISSION_DENIED", 403, "denied")
    UNAUTHENTICATED = ("unauthenticated", "UNAUTHENTICATED", 401, "unauthenticated")
    TOO_LARGE = ("too_large", "RESOURCE_EXHAUSTED", 413, "too_large")
    """Over a configured size limit: sending it again will not help."""
    EXHAUSTED = ("exhausted", "RESOURCE_EXHAUSTED", 429, "exhausted")
    """Too much work already waiting, or a rate limit: retry later."""
    UNAVAILABLE = ("unavailable", "UNAVAILABLE", 503, "unavailable")
    DATA_LOSS = ("data_loss", "DATA_LOSS", 500, "data_loss")
    INTERNAL = ("internal", "INTERNAL", 500, "internal")

    def __init__(self, label: str, grpc_code: str, http_status: int, outcome: str):
        self.label = label
        self.grpc_code = grpc_code
        self.http_status = http_status
        self.outcome = outcome

    @property
    def retryable(self) -> bool:
        return self in (Kind.UNAVAILABLE, Kind.EXHAUSTED)

    @classmethod
    def from_label(cls, label: str) -> Kind | None:
        return _BY_LABEL.get(label)


_BY_LABEL = {kind.label: kind for kind in Kind}
# Where two kinds share a status, the later one in Kind stands for it (a bare 409 is a
# lost compare-and-set), except RESOURCE_EXHAUSTED: grpc itself answers it, without the
# kind's trailer, for a message over the size limit, and a consumer that took that for
# "retry later" would retry the same record forever. Platform servers that mean "retry
# later" send the trailer. DEADLINE_EXCEEDED and CANCELLED are the transport's, not a
# server's verdict: the call may succeed if made again.
_BY_GRPC_CODE = {
    **{kind.grpc_code: kind for kind in Kind},
    "RESOURCE_EXHAUSTED": Kind.TOO_LARGE,
    "DEADLINE_EXCEEDED": Kind.UNAVAILABLE,
    "CANCELLED": Kind.UNAVAILABLE,
    "UNKNOWN": Kind.INTERNAL,
    "UNIMPLEMENTED": Kind.INTERNAL,
    "OUT_OF_RANGE": Kind.INVALID,
}
_BY_HTTP_STATUS = {
    **{kind.http_status: kind for kind in Kind},
    409: Kind.CONFLICT,
    405: Kind.NOT_FOUND,
    411: Kind.INVALID,
    415: Kind.INVALID,
    422: Kind.INVALID,
    504: Kind.UNAVAILABLE,
}


class PlatformError(Exception):
    """A request the platform refuses or cannot serve; nothing it asked for was half-written.

    A subclass fixes its kind (``class NotFound(PlatformError, kind=Kind.NOT_FOUND)``);
    services subclass those for their own names (``class ModelNotFound(NotFound)``).
    """

    kind: ClassVar[Kind] = Kind.INTERNAL

    def __init_subclass__(cls, kind: Kind | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = kind

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(PlatformError, kind=Kind.INVALID):
    """Bad input; ``field`` names what to fix."""


class NotFound(PlatformError, kind=Kind.NOT_FOUND):
    """No such resource."""


class AlreadyExists(PlatformError, kind=Kind.ALREADY_EXISTS):
    """A resource of that name exists already."""


class Conflict(PlatformError, kind=Kind.CONFLICT):
    """A compare-and-set lost: the resource changed since the caller looked."""


class FailedPrecondition(PlatformError, kind=Kind.FAILED_PRECONDITION):
    """The resource is in a state that does not allow the change."""


class PermissionDenied(PlatformError, kind=Kind.PERMISSION):
    """Authenticated, but refused by a rule (a scope, a team, approving one's own version)."""


class Unauthenticated(PlatformError, kind=Kind.UNAUTHENTICATED):
    """No credentials, or credentials that do not verify."""


class TooLarge(PlatformError, kind=Kind.TOO_LARGE):
    """Over a configured size limit, refused before anything is stored."""


class Exhausted(PlatformError, kind=Kind.EXHAUSTED):
    """Too much work is already waiting: retry later."""


class Unavailable(PlatformError, kind=Kind.UNAVAILABLE):
    """A dependency cannot be reached, or the resource is not ready yet: retry later."""


class DataLoss(PlatformError, kind=Kind.DATA_LOSS):
    """Stored data is damaged (an artifact whose bytes no longer match their digest)."""


class Internal(PlatformError, kind=Kind.INTERNAL):
    """A failure of the platform's own, reported without its details."""


_CLASS_OF: dict[Kind, type[PlatformError]] = {
    cls.kind: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Conflict,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        TooLarge,
        Exhausted,
        Unavailable,
        DataLoss,
        Internal,
    )
}


def error_of(kind: Kind, message: str, *, field: str = "") -> PlatformError:
    """The platform error of ``kind`` (its base class)."""
    return _CLASS_OF[kind](message, field=field)


def from_status(grpc_code: str, message: str, *, kind: str = "", field: str = "") -> PlatformError:
    """The platform error a gRPC status stands for: the server's own ``kind`` trailer when it
    sent one, else the kind its code names."""
    resolved = Kind.from_label(kind) or _BY_GRPC_CODE.get(grpc_code, Kind.INTERNAL)
    return error_of(resolved, message, field=field)


def kind_of_http_status(status: int) -> Kind:
    """The kind an HTTP error status stands for (unlisted 4xx: invalid; 5xx: internal)."""
    return _BY_HTTP_STATUS.get(status, Kind.INVALID if status < 500 else Kind.INTERNAL)


def problem(error: PlatformError, *, status: int | None = None, instance: str = "") -> dict[str, Any]:
    """The RFC 9457 problem-details body for ``error``, as every HTTP API answers.

    Beyond the standard members it carries ``kind``, ``code`` (the gRPC status the same
    failure gets), ``field`` (empty unless one input is to blame) and ``error``, the
    message again under the name the Open Inference Protocol's REST errors use, so V2
    clients read it unchanged. ``status`` overrides the kind's HTTP status where a route's
    contract fixes another (411 Length Required, say).
    """
    code = status or error.kind.http_status
    body: dict[str, Any] = {
        "type": f"urn:mlops:error:{error.kind.label}",
        "title": HTTPStatus(code).phrase,
        "status": code,
        "detail": error.message,
        "kind": error.kind.label,
        "code": error.kind.grpc_code,
        "field": error.field,
        "error": error.message,
    }
    if instance:
        body["instance"] = instance
    return body
