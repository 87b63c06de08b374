"""The registry's MongoDB collections, their indexes, and the mapping between stored
documents and the protobuf messages the API speaks.

A version's immutable part (artifact, metrics, signature, lineage ...) is kept as the
serialized ``ModelVersion`` it was registered with, so nothing is lost in translation;
the fields that change (status, aliases, review) and the ones searched on (dataset,
content hash, tags, metrics as key/value pairs, which keeps arbitrary names out of
field paths) sit beside it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import pymongo
from google.protobuf.timestamp_pb2 import Timestamp
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from services.common.mongo import Document
from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.registry.errors import InvalidArgument

T = TypeVar("T")


class Store:
    """The collections, and a way to run a function in one transaction."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        db: AsyncDatabase[Document],
        transaction_timeout: float = 10.0,
    ):
        self.client = client
        self._transaction_timeout = transaction_timeout
        self.db = db
        self.models = db["models"]
        self.versions = db["model_versions"]
        self.specs = db["model_specs"]
        self.alias_history = db["alias_history"]
        self.audit = db["audit_log"]
        self.outbox = db["outbox"]

    async def ensure_indexes(self, outbox_retention_seconds: int) -> None:
        await self.versions.create_indexes(
            [
                IndexModel([("model_name", ASCENDING), ("version", ASCENDING)], unique=True),
                IndexModel([("dataset", ASCENDING)]),
                IndexModel([("content_sha256", ASCENDING)]),
                IndexModel([("train_request_id", ASCENDING)]),
                IndexModel([("model_name", ASCENDING), ("parent_version", ASCENDING)]),
                IndexModel([("tags.k", ASCENDING), ("tags.v", ASCENDING)]),
            ]
        )
        await self.models.create_indexes([IndexModel([("tags.k", ASCENDING), ("tags.v", ASCENDING)])])
        await self.specs.create_index([("model_name", ASCENDING), ("spec_version", ASCENDING)], unique=True)
        await self.alias_history.create_index(
            [("model_name", ASCENDING), ("alias", ASCENDING), ("changed_at", DESCENDING)]
        )
        await self.audit.create_indexes(
            [
                IndexModel([("occurred_at", DESCENDING)]),
                IndexModel([("actor", ASCENDING), ("occurred_at", DESCENDING)]),
                IndexModel([("resource", ASCENDING), ("occurred_at", DESCENDING)]),
                IndexModel([("request_id", ASCENDING)]),
            ]
        )
        await self.outbox.create_indexes(
            [
                IndexModel([("relayed_at", ASCENDING), ("created_at", ASCENDING)]),
                IndexModel(
                    [("relayed_at", ASCENDING)],
                    expireAfterSeconds=outbox_retention_seconds,
                    name="relayed_at_ttl",
                ),
            ]
        )

    async def transaction(self, work: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """Run ``work`` in one snapshot transaction, retried on transient conflicts.

        Concurrent changes to one model all write its document, so they conflict and
        serialize: a retried attempt re-reads the model and sees the winner's change. The
        whole of it, retries included, is bounded (PyMongo's client-side operation timeout),
        so a database that is away fails the call quickly instead of retrying for minutes.
        """
        with pymongo.timeout(self._transaction_timeout):
            async with self.client.start_session() as session:
                return await session.with_transaction(
                    work, read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
                )


def timestamp(value: datetime | None) -> Timestamp:
    stamp = Timestamp()
    if value is not None:
        stamp.FromDatetime(value)
    return stamp


def key_values(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A map as a list of ``{k, v}`` pairs: queryable, whatever characters the keys hold."""
    return [{"k": k, "v": v} for k, v in sorted(values.items())]


def from_key_values(pairs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {pair["k"]: pair["v"] for pair in pairs or ()}


def model_to_proto(doc: Document) -> registry_pb2.Model:
    return registry_pb2.Model(
        name=doc["_id"],
        description=doc.get("description", ""),
        tags=from_key_values(doc.get("tags")),
        promotion_policy=doc.get("promotion_policy", registry_pb2.PROMOTION_POLICY_AUTO),
        aliases=doc.get("aliases", {}),
        latest_version=doc.get("latest_version", 0),
        created_at=timestamp(doc.get("created_at")),
        updated_at=timestamp(doc.get("updated_at")),
        created_by=doc.get("created_by", ""),
        latest_spec_version=doc.get("latest_spec_version", 0),
    )


def version_document(version: registry_pb2.ModelVersion, status: int, now: datetime) -> Document:
    """The stored form of a new version (``version`` holds its immutable part)."""
    data = version.lineage.data
    return {
        "model_name": version.model_name,
        "version": version.version,
        "status": status,
        "aliases": [],
        "proto": version.SerializeToString(),
        "artifact_sha256": version.artifact.sha256,
        "metrics": key_values(dict(version.metrics)),
        "tags": key_values(dict(version.tags)),
        "dataset": data.window.dataset or version.spec.dataset,
        "content_sha256": data.content_sha256,
        "parent_version": version.lineage.parent_version,
        "train_request_id": version.lineage.train_request_id,
        "code_version": version.lineage.code_version,
        "rolled_back": False,
        "review": None,
        "created_at": now,
        "updated_at": now,
        "created_by": version.created_by,
    }


def version_to_proto(doc: Document) -> registry_pb2.ModelVersion:
    version = registry_pb2.ModelVersion.FromString(doc["proto"])
    version.status = doc["status"]
    version.aliases[:] = sorted(doc.get("aliases", ()))
    version.updated_at.CopyFrom(timestamp(doc.get("updated_at")))
    version.rolled_back = bool(doc.get("rolled_back"))
    review = doc.get("review")
    if review:
        version.review.CopyFrom(
            registry_pb2.Review(
                decision=review["decision"],
                reviewer=review["reviewer"],
                comment=review["comment"],
                reviewed_at=timestamp(review["reviewed_at"]),
            )
        )
    return version


def version_summary(doc: Document) -> registry_pb2.ModelVersion:
    """A version as lists, searches and lineage return it: without its reference profile,
    which can outweigh everything else in it (a page of them would be megabytes)."""
    version = version_to_proto(doc)
    version.ClearField("reference_profile")
    return version


def spec_to_proto(doc: Document) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec.FromString(doc["proto"])
    spec.spec_version = doc["spec_version"]
    return spec


def alias_change_to_proto(doc: Document) -> registry_pb2.AliasChange:
    return registry_pb2.AliasChange(
        alias=doc["alias"],
        version=doc["version"],
        previous_version=doc["previous_version"],
        actor=doc["actor"],
        changed_at=timestamp(doc["changed_at"]),
        reason=doc.get("reason", ""),
        request_id=doc.get("request_id", ""),
        action=doc["action"],
    )


def audit_to_proto(doc: Document) -> registry_pb2.AuditRecord:
    return registry_pb2.AuditRecord(
        id=str(doc["_id"]),
        occurred_at=timestamp(doc["occurred_at"]),
        actor=doc["actor"],
        action=doc["action"],
        resource=doc["resource"],
        before_json=json.dumps(doc.get("before"), sort_keys=True, default=str) if doc.get("before") else "",
        after_json=json.dumps(doc.get("after"), sort_keys=True, default=str) if doc.get("after") else "",
        outcome=doc["outcome"],
        request_id=doc.get("request_id", ""),
        detail=doc.get("detail", ""),
        transport=doc.get("transport", ""),
    )


def encode_page_token(position: Mapping[str, Any]) -> str:
    """An opaque token for keyset pagination: where the next page starts."""
    return base64.urlsafe_b64encode(json.dumps(position, sort_keys=True).encode()).decode()


def decode_page_token(token: str, fields: Mapping[str, type]) -> dict[str, Any] | None:
    """The position in ``token``, checked field by field; None for the first page."""
    if not token:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidArgument("page_token: not a token this API returned", field="page_token") from None
    if not isinstance(position, dict) or set(position) != set(fields):
        raise InvalidArgument("page_token: not a token this API returned", field="page_token")
    for name, kind in fields.items():
        if not isinstance(position[name], kind) or isinstance(position[name], bool):
            raise InvalidArgument("page_token: not a token this API returned", field="page_token")
    return position
