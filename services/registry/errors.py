"""What can go wrong with a registry call, in terms both transports translate exactly:
each error carries its gRPC status code, its HTTP status and, for bad input, the field."""

from __future__ import annotations

from typing import Any

import grpc
import pymongo.errors

MEANINGS: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_argument"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "already_exists"),
    grpc.StatusCode.ABORTED: (409, "aborted"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "failed_precondition"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "denied"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (413, "too_large"),
    grpc.StatusCode.UNAVAILABLE: (503, "unavailable"),
    grpc.StatusCode.INTERNAL: (500, "internal"),
    grpc.StatusCode.DATA_LOSS: (500, "data_loss"),
}
"""Each gRPC status the registry answers with: its HTTP status and its audit-log outcome."""


class RegistryError(Exception):
    """A request the registry refuses; nothing it asked for was written.

    A subclass names its gRPC status (``class NotFound(RegistryError, status=...)``) and
    takes the HTTP status and the audit outcome from :data:`MEANINGS`.
    """

    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    outcome = "error"

    def __init_subclass__(cls, status: grpc.StatusCode | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.grpc_code = status
            cls.http_status, cls.outcome = MEANINGS[status]

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(RegistryError, status=grpc.StatusCode.INVALID_ARGUMENT):
    """Bad input; ``field`` names what to fix."""


class NotFound(RegistryError, status=grpc.StatusCode.NOT_FOUND):
    """No such model, version, alias or spec."""


class AlreadyExists(RegistryError, status=grpc.StatusCode.ALREADY_EXISTS):
    """A model of that name exists already."""


class Conflict(RegistryError, status=grpc.StatusCode.ABORTED):
    """A compare-and-set lost: the resource changed since the caller looked."""


class FailedPrecondition(RegistryError, status=grpc.StatusCode.FAILED_PRECONDITION):
    """The resource is in a state that does not allow the change (archived, not pending ...)."""


class PermissionDenied(RegistryError, status=grpc.StatusCode.PERMISSION_DENIED):
    """Authenticated, allowed the scope, but refused by a rule (approving one's own version)."""


class TooLarge(RegistryError, status=grpc.StatusCode.RESOURCE_EXHAUSTED):
    """A declared size over the limit, refused before any byte is stored."""


class Unavailable(RegistryError, status=grpc.StatusCode.UNAVAILABLE):
    """The database cannot be reached: nothing was changed, the call may be retried."""


class Internal(RegistryError, status=grpc.StatusCode.INTERNAL):
    """A failure of the registry's own, reported without its details."""


def from_database(exc: pymongo.errors.PyMongoError) -> RegistryError:
    """What a database failure means to the caller, without leaking its details."""
    if (
        isinstance(exc, pymongo.errors.ConnectionFailure)
        or exc.timeout
        or exc.has_error_label("TransientTransactionError")
    ):
        return Unavailable("the registry's database is unavailable; retry later")
    return Internal(f"database error ({type(exc).__name__})")
