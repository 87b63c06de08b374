"""MongoDB storage of schemas, rows, labels waiting for their event, and quality counts.

Collections (all prefixed ``ingest_``: ingest owns them; other services read rows
through the dataset API, never from here):

``ingest_schemas``
    One document per schema version, unique on (name, version).
``ingest_rows``
    One document per stored event, unique on (dataset, event_id): the idempotency key.
    ``source`` records where the row came from (topic/partition/offset), which tells a
    redelivery of the same record (handle again) from a duplicate event (count it).
    ``expire_at`` (event time + the dataset's retention) drives a TTL index.
``ingest_pending_labels``
    Labels that arrived before their event; attached when the event is stored.
``ingest_quality``
    Event counts per dataset, processing minute, outcome, error class and field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format
from pymongo import ASCENDING, DESCENDING, ReplaceOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.errors import Conflict
from services.common.mongo import Document
from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema
from services.common.proto.mlops.v1.events_pb2 import FeatureRow
from services.ingest.validation import set_cell

DUPLICATE_KEY = 11000
WINDOW_ORDER = [("event_time", ASCENDING), ("event_id", ASCENDING)]


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def schema_to_document(schema: DatasetSchema) -> Document:
    return {
        "name": schema.name,
        "version": schema.version,
        "private": any(spec.private for spec in schema.fields),
        "schema": json_format.MessageToDict(schema, preserving_proto_field_name=True),
    }


def schema_from_document(document: Mapping[str, Any]) -> DatasetSchema:
    return json_format.ParseDict(document["schema"], DatasetSchema())


def row_to_feature_row(document: Mapping[str, Any]) -> FeatureRow:
    """A stored row as the ``FeatureRow`` the dataset API and ``mlops.features`` carry."""
    row = FeatureRow(
        event_id=document["event_id"],
        entity_id=document.get("entity_id", ""),
        dataset=document["dataset"],
        schema_version=document["schema_version"],
    )
    row.event_time.FromDatetime(utc(document["event_time"]))
    for name, value in document.get("features", {}).items():
        set_cell(row.features[name], value)
    label = document.get("label")
    if label is not None:
        set_cell(row.label, label)
    return row


@dataclass(frozen=True)
class WindowQuery:
    """A window's filter: dataset, inclusive time bounds, labelled rows only."""

    dataset: str
    start: datetime | None
    end: datetime | None
    labelled_only: bool
    now: datetime

    def filter(self) -> Document:
        clauses: list[Document] = [{"dataset": self.dataset}]
        bounds: Document = {}
        if self.start is not None:
            bounds["$gte"] = self.start
        if self.end is not None:
            bounds["$lte"] = self.end
        if bounds:
            clauses.append({"event_time": bounds})
        if self.labelled_only:
            clauses.append({"label": {"$ne": None}})
        # Retention is exact for readers: rows past their expiry are out of every window
        # even before the TTL sweep removes them.
        clauses.append({"$or": [{"expire_at": {"$exists": False}}, {"expire_at": {"$gt": self.now}}]})
        return {"$and": clauses}


class DatasetStore:
    """The ingest service's collections, behind the operations the service needs."""

    def __init__(self, database: AsyncDatabase[Document]):
        self._schemas = database["ingest_schemas"]
        self._rows = database["ingest_rows"]
        self._pending = database["ingest_pending_labels"]
        self._quality = database["ingest_quality"]

    async def ensure_indexes(self) -> None:
        await self._schemas.create_index([("name", ASCENDING), ("version", ASCENDING)], unique=True)
        await self._rows.create_index([("dataset", ASCENDING), ("event_id", ASCENDING)], unique=True)
        await self._rows.create_index([("dataset", ASCENDING), *WINDOW_ORDER])
        await self._rows.create_index("expire_at", expireAfterSeconds=0)
        await self._pending.create_index([("dataset", ASCENDING), ("event_id", ASCENDING)], unique=True)
        await self._pending.create_index("expire_at", expireAfterSeconds=0)
        await self._quality.create_index(
            [("dataset", ASCENDING), ("minute", ASCENDING), ("outcome", ASCENDING)]
            + [("error_class", ASCENDING), ("field", ASCENDING)],
            unique=True,
        )

    # Schemas

    async def get_schema(self, name: str, version: int = 0) -> DatasetSchema | None:
        """One version of a schema, the latest when ``version`` is 0."""
        if version:
            document = await self._schemas.find_one({"name": name, "version": version})
        else:
            document = await self._schemas.find_one({"name": name}, sort=[("version", DESCENDING)])
        return schema_from_document(document) if document else None

    async def insert_schema(self, schema: DatasetSchema) -> None:
        """Store a new version; :class:`~services.common.errors.Conflict` if it exists
        already (another registration of it won the race)."""
        try:
            await self._schemas.insert_one(schema_to_document(schema))
        except DuplicateKeyError:
            raise Conflict(f"{schema.name} v{schema.version} was registered concurrently; retry") from None

    async def latest_schemas(self) -> list[DatasetSchema]:
        pipeline: list[Document] = [
            {"$sort": {"name": 1, "version": -1}},
            {"$group": {"_id": "$name", "document": {"$first": "$$ROOT"}}},
            {"$sort": {"_id": 1}},
        ]
        cursor = await self._schemas.aggregate(pipeline)
        return [schema_from_document(item["document"]) async for item in cursor]

    async def any_private_schema(self) -> bool:
        return await self._schemas.find_one({"private": True}, projection={"_id": 1}) is not None

    async def apply_retention(self, dataset: str, retention_seconds: int) -> None:
        """Re-date the expiry of a dataset's stored rows after its retention changed."""
        if retention_seconds:
            update: list[Document] = [
                {"$set": {"expire_at": {"$add": ["$event_time", retention_seconds * 1000]}}}
            ]
        else:
            update = [{"$unset": "expire_at"}]
        await self._rows.update_many({"dataset": dataset}, update)

    # Rows

    async def insert_rows(self, documents: Sequence[Document]) -> set[int]:
        """Insert rows in bulk; the indices of those whose (dataset, event_id) exists already."""
        if not documents:
            return set()
        try:
            await self._rows.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            others = [error for error in errors if error.get("code") != DUPLICATE_KEY]
            if others or exc.details.get("writeConcernErrors"):
                raise
            return {int(error["index"]) for error in errors}
        return set()

    async def provenance(self, dataset: str, event_ids: Iterable[str]) -> dict[str, Document]:
        """Where each stored row of ``event_ids`` came from (``source``) and its ``label``."""
        cursor = self._rows.find(
            {"dataset": dataset, "event_id": {"$in": list(event_ids)}},
            projection={"_id": 0, "event_id": 1, "source": 1, "label": 1},
        )
        return {document["event_id"]: document async for document in cursor}

    async def set_label(self, dataset: str, event_id: str, label: Any, now: datetime) -> Document | None:
        """Attach ``label`` to a stored row; the row as it was before, or None if not stored."""
        return await self._rows.find_one_and_update(
            {"dataset": dataset, "event_id": event_id},
            {"$set": {"label": label, "labelled_at": now}},
            projection={"_id": 0, "entity_id": 1, "event_time": 1, "label": 1},
        )

    async def set_labels(self, labels: Sequence[tuple[str, str, Any]], now: datetime) -> None:
        """Attach labels to rows just stored: (dataset, event_id, label) each."""
        if labels:
            await self._rows.bulk_write(
                [
                    UpdateOne({"dataset": d, "event_id": e}, {"$set": {"label": label, "labelled_at": now}})
                    for d, e, label in labels
                ],
                ordered=False,
            )

    async def add_pending_label(self, document: Document, keep_seconds: int) -> None:
        document = {**document, "expire_at": document["received_at"] + timedelta(seconds=keep_seconds)}
        await self._pending.bulk_write(
            [
                ReplaceOne(
                    {"dataset": document["dataset"], "event_id": document["event_id"]}, document, upsert=True
                )
            ]
        )

    async def pending_labels(self, dataset: str, event_ids: Sequence[str]) -> dict[str, Document]:
        """The labels waiting for ``event_ids``."""
        if not event_ids:
            return {}
        query = {"dataset": dataset, "event_id": {"$in": list(event_ids)}}
        return {document["event_id"]: document async for document in self._pending.find(query)}

    async def drop_pending_labels(self, dataset: str, event_ids: Sequence[str]) -> None:
        """Forget waiting labels once their rows carry them."""
        if event_ids:
            await self._pending.delete_many({"dataset": dataset, "event_id": {"$in": list(event_ids)}})

    async def has_pending_labels(self) -> bool:
        return await self._pending.find_one({}, projection={"_id": 1}) is not None

    # Windows

    async def count(self, query: WindowQuery) -> int:
        return await self._rows.count_documents(query.filter())

    async def newest_cutoff(self, query: WindowQuery, max_rows: int) -> tuple[datetime, str] | None:
        """The oldest of the newest ``max_rows`` rows: where a capped window starts."""
        cursor = (
            self._rows.find(query.filter(), projection={"_id": 0, "event_time": 1, "event_id": 1})
            .sort([("event_time", DESCENDING), ("event_id", DESCENDING)])
            .skip(max_rows - 1)
            .limit(1)
        )
        async for document in cursor:
            return utc(document["event_time"]), document["event_id"]
        return None

    async def rows(
        self, query: WindowQuery, cutoff: tuple[datetime, str] | None, batch_size: int
    ) -> AsyncIterator[Document]:
        """The window's rows in window order (event time, then event id)."""
        filter_ = query.filter()
        if cutoff is not None:
            moment, event_id = cutoff
            filter_["$and"].append(
                {
                    "$or": [
                        {"event_time": {"$gt": moment}},
                        {"event_time": moment, "event_id": {"$gte": event_id}},
                    ]
                }
            )
        cursor = self._rows.find(filter_, projection={"_id": 0}).sort(WINDOW_ORDER).batch_size(batch_size)
        async for document in cursor:
            yield document

    # Quality

    async def add_quality(self, minute: datetime, counts: Mapping[tuple[str, str, str, str], int]) -> None:
        """Add ``counts`` keyed by (dataset, outcome, error class, field) to ``minute``'s."""
        if not counts:
            return
        await self._quality.bulk_write(
            [
                UpdateOne(
                    {"dataset": d, "minute": minute, "outcome": o, "error_class": c, "field": f},
                    {"$inc": {"count": n}},
                    upsert=True,
                )
                for (d, o, c, f), n in counts.items()
            ],
            ordered=False,
        )

    async def quality(self, dataset: str, start: datetime | None, end: datetime | None) -> list[Document]:
        """Counts by outcome, error class and field over the minutes in [start, end)."""
        match: Document = {"dataset": dataset}
        bounds: Document = {}
        if start is not None:
            bounds["$gte"] = minute_of(start)
        if end is not None:
            bounds["$lt"] = end
        if bounds:
            match["minute"] = bounds
        pipeline: list[Document] = [
            {"$match": match},
            {
                "$group": {
                    "_id": {"outcome": "$outcome", "error_class": "$error_class", "field": "$field"},
                    "count": {"$sum": "$count"},
                }
            },
        ]
        cursor = await self._quality.aggregate(pipeline)
        return [{**item["_id"], "count": item["count"]} async for item in cursor]
