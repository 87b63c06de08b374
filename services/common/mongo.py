"""MongoDB through PyMongo's async API."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common.settings import ServiceSettings

Document = dict[str, Any]


def create_client(settings: ServiceSettings, app_name: str) -> AsyncMongoClient[Document]:
    """A client with timezone-aware datetimes and a short server-selection timeout,
    so an unreachable database surfaces as a retryable error instead of a hang."""
    return AsyncMongoClient(
        settings.mongodb_uri.get_secret_value(),
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        uuidRepresentation="standard",
    )


def database(client: AsyncMongoClient[Document], settings: ServiceSettings) -> AsyncDatabase[Document]:
    return client[settings.mongodb_database]
