"""What the registry refuses with: the platform's error kinds (:mod:`services.common.errors`,
which gives each its gRPC code, HTTP status and audit outcome), and the names only the
registry raises. Registry modules import their errors from here."""

from __future__ import annotations

from services.common.errors import (
    AlreadyExists,
    Conflict,
    DataLoss,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PlatformError,
    TooLarge,
    Unavailable,
)


class ArtifactCorrupt(DataLoss):
    """Stored bytes no longer match their digest, or are gone: refuse them loudly."""


__all__ = [
    "AlreadyExists",
    "ArtifactCorrupt",
    "Conflict",
    "DataLoss",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PlatformError",
    "TooLarge",
    "Unavailable",
]
