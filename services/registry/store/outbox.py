"""The ``outbox`` collection: model events written with the change that caused them, waiting
to be relayed to Kafka (see :mod:`services.registry.outbox`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pymongo import ASCENDING, IndexModel

from services.common.proto.mlops.v1 import events_pb2
from services.registry.store.errors import database_call
from services.registry.store.repository import Repository


@dataclass(frozen=True)
class PendingEvent:
    """An event not relayed yet; ``id`` is the outbox's own, for :meth:`OutboxRepository.relayed`."""

    id: object
    event_id: str
    key: str
    payload: bytes


class OutboxRepository(Repository):
    async def ensure_indexes(self, retention_seconds: int) -> None:
        """Relayed events expire ``retention_seconds`` after they went out."""
        await self._collection.create_indexes(
            [
                IndexModel([("relayed_at", ASCENDING), ("created_at", ASCENDING)]),
                IndexModel(
                    [("relayed_at", ASCENDING)], expireAfterSeconds=retention_seconds, name="relayed_at_ttl"
                ),
            ]
        )

    @database_call
    async def add(self, event: events_pb2.ModelEvent, *, key: str, now: datetime) -> None:
        await self._collection.insert_one(
            {
                "event_id": event.event_id,
                "key": key,
                "payload": event.SerializeToString(),
                "created_at": now,
                "relayed_at": None,
            },
            session=self.session,
        )

    @database_call
    async def pending(self, limit: int) -> list[PendingEvent]:
        """Up to ``limit`` events not relayed yet, oldest first."""
        docs = (
            await self._collection.find({"relayed_at": None}, session=self.session)
            .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list()
        )
        return [PendingEvent(d["_id"], d["event_id"], d["key"], d["payload"]) for d in docs]

    @database_call
    async def relayed(self, events: Sequence[PendingEvent], now: datetime) -> None:
        """Mark ``events`` as published (they expire after the retention period)."""
        await self._collection.update_many(
            {"_id": {"$in": [event.id for event in events]}},
            {"$set": {"relayed_at": now}},
            session=self.session,
        )
