"""Errors a client can act on, named as the Open Inference Protocol's answers are.

Each is a platform error (:mod:`services.common.errors`) of the matching kind: the
domain raises them, and the shared edges answer gRPC with the kind's status code and
HTTP with a problem-details body whose ``error`` member V2 clients read, both with
the same message.

>>> error = Overloaded("model 'churn' has 512 requests waiting")
>>> error.kind.grpc_code, error.kind.http_status, error.kind.retryable
('RESOURCE_EXHAUSTED', 429, True)
"""

from __future__ import annotations

from services.common import errors


class InvalidInput(errors.InvalidArgument):
    """The request is malformed: a tensor's name, datatype, shape or values."""


class ModelNotFound(errors.NotFound):
    """No such model, version or alias is served."""


class Forbidden(errors.PermissionDenied):
    """The caller sees the model's team but may not predict with its models."""


class TooLarge(errors.TooLarge):
    """The request exceeds a configured limit (rows, bytes)."""


class Overloaded(errors.Exhausted):
    """Too much work is already waiting for this model: retry later."""


class ModelUnavailable(errors.Unavailable):
    """The model is known but cannot answer now (loading, or its load failed)."""
