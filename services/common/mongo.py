"""MongoDB through PyMongo's async API."""

from __future__ import annotations

from typing import Any

import pymongo.errors
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common.settings import ServiceSettings

Document = dict[str, Any]


def create_client(settings: ServiceSettings, app_name: str) -> AsyncMongoClient[Document]:
    """A client with timezone-aware datetimes and a short server-selection timeout,
    so an unreachable database surfaces as a retryable error instead of a hang; with TLS
    when the URI asks for it or ``MLOPS_MONGODB_TLS_*`` files are set."""
    return AsyncMongoClient(
        settings.mongodb_uri.get_secret_value(),
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        uuidRepresentation="standard",
        **tls_options(settings),
    )


def tls_options(settings: ServiceSettings) -> dict[str, Any]:
    """PyMongo's TLS options from the settings (none when no file is set, leaving the URI's).

    >>> from pathlib import Path
    >>> settings = ServiceSettings.model_construct(
    ...     mongodb_tls_ca_file=Path("/ca.pem"), mongodb_tls_certificate_key_file=None
    ... )
    >>> tls_options(settings)
    {'tls': True, 'tlsCAFile': '/ca.pem'}
    """
    options: dict[str, Any] = {}
    if settings.mongodb_tls_ca_file is not None:
        options["tlsCAFile"] = str(settings.mongodb_tls_ca_file)
    if settings.mongodb_tls_certificate_key_file is not None:
        options["tlsCertificateKeyFile"] = str(settings.mongodb_tls_certificate_key_file)
    return {"tls": True, **options} if options else {}


def database(client: AsyncMongoClient[Document], settings: ServiceSettings) -> AsyncDatabase[Document]:
    return client[settings.mongodb_database]


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the database being away or failing over (retry the same work
    later) rather than the work being wrong."""
    if isinstance(exc, pymongo.errors.ConnectionFailure | pymongo.errors.WriteConcernError):
        return True
    return isinstance(exc, pymongo.errors.OperationFailure) and exc.has_error_label(
        "TransientTransactionError"
    )
