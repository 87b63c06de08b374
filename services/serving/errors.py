"""Errors a client can act on, one class per Open Inference Protocol status.

The domain raises these; the gRPC adapter turns them into status codes and the HTTP
adapter into the matching 4xx/5xx, both with the same message.
"""

from __future__ import annotations

import grpc


class InferenceError(Exception):
    """Base: a request the server will not answer, and why."""

    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(InferenceError):
    """The request is malformed: a tensor's name, datatype, shape or values."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


class ModelNotFound(InferenceError):
    """No such model, version or alias is served."""

    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class Forbidden(InferenceError):
    """The caller sees the model's team but may not predict with its models."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


class TooLarge(InferenceError):
    """The request exceeds a configured limit (rows, bytes)."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413


class Overloaded(InferenceError):
    """Too much work is already waiting for this model: retry later."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class ModelUnavailable(InferenceError):
    """The model is known but cannot answer now (loading, or its load failed)."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
