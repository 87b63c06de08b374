"""What can go wrong with a registry call, in terms both transports translate exactly:
each error carries its gRPC status code, its HTTP status and, for bad input, the field."""

from __future__ import annotations

import grpc
import pymongo.errors


class RegistryError(Exception):
    """A request the registry refuses; nothing it asked for was written."""

    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    outcome = "error"

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(RegistryError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    outcome = "invalid_argument"


class NotFound(RegistryError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    outcome = "not_found"


class AlreadyExists(RegistryError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409
    outcome = "already_exists"


class Conflict(RegistryError):
    """A compare-and-set lost: the resource changed since the caller looked."""

    grpc_code = grpc.StatusCode.ABORTED
    http_status = 409
    outcome = "aborted"


class FailedPrecondition(RegistryError):
    """The resource is in a state that does not allow the change (archived, not pending ...)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409
    outcome = "failed_precondition"


class PermissionDenied(RegistryError):
    """Authenticated, allowed the scope, but refused by a rule (approving one's own version)."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    outcome = "denied"


class TooLarge(RegistryError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413
    outcome = "too_large"


class Unavailable(RegistryError):
    """The database cannot be reached: nothing was changed, the call may be retried."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    outcome = "unavailable"


class Internal(RegistryError):
    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    outcome = "internal"


def from_database(exc: pymongo.errors.PyMongoError) -> RegistryError:
    """What a database failure means to the caller, without leaking its details."""
    if (
        isinstance(exc, pymongo.errors.ConnectionFailure)
        or exc.timeout
        or exc.has_error_label("TransientTransactionError")
    ):
        return Unavailable("the registry's database is unavailable; retry later")
    return Internal(f"database error ({type(exc).__name__})")
