"""The ``train_runs`` collection: each trainer job as a run, folded from its results.

A run is written by compare-and-set on its ``revision``: whoever folds a result into a run
read at revision ``r`` writes revision ``r + 1`` only if nobody else wrote first, and reads
again otherwise. Two registry replicas briefly handling the same results (a consumer-group
rebalance) therefore never lose an update, and the same result folded twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from services.common.auth import DEFAULT_TEAM
from services.common.mongo import Document
from services.common.proto.mlops.v1 import runs_pb2
from services.registry.store.errors import database_call
from services.registry.store.pagination import Keyset, Page, PageRequest, SortKey, read_page
from services.registry.store.repository import Repository

Run = runs_pb2.Run


@dataclass(frozen=True)
class StoredRun:
    """A run as read, with the revision a write must find to replace it, and the team it
    belongs to (its model's when the registry first heard of it)."""

    run: Run
    revision: int
    team: str = DEFAULT_TEAM


def _run(document: Document) -> Run:
    return Run.FromString(document["proto"])


def _stored(document: Document | None) -> StoredRun | None:
    if document is None:
        return None
    return StoredRun(_run(document), int(document["revision"]), document.get("team", DEFAULT_TEAM))


class RunRepository(Repository):
    NEWEST_FIRST = Keyset(SortKey("order", ObjectId, descending=True, token="before"))
    """Runs in the order the registry first heard of them, newest first."""

    async def ensure_indexes(self) -> None:
        await self._collection.create_index([("model_name", ASCENDING), ("order", DESCENDING)])
        await self._collection.create_index([("state", ASCENDING), ("order", DESCENDING)])
        await self._collection.create_index("idempotency_key", sparse=True)
        await self._collection.create_index("coalesced")
        await self._collection.create_index([("team", ASCENDING), ("order", DESCENDING)])

    @database_call
    async def get(self, run_id: str) -> StoredRun | None:
        return _stored(await self._collection.find_one({"_id": run_id}, session=self.session))

    @database_call
    async def find(self, request_id: str) -> StoredRun | None:
        """The run opened by ``request_id``, or the one it was coalesced into."""
        document = await self._collection.find_one(
            {"$or": [{"_id": request_id}, {"coalesced": request_id}]}, session=self.session
        )
        return _stored(document)

    @database_call
    async def by_idempotency_key(self, key: str) -> StoredRun | None:
        return _stored(await self._collection.find_one({"idempotency_key": key}, session=self.session))

    @database_call
    async def put(self, run: Run, revision: int, team: str = DEFAULT_TEAM) -> bool:
        """Write ``run`` over revision ``revision`` (0: it must not exist yet, and is written
        as ``team``'s); False when someone else wrote first (read again, fold again)."""
        fields: Document = {
            "model_name": run.model_name,
            "state": int(run.state),
            "coalesced": list(run.coalesced_request_ids),
            "revision": revision + 1,
            "proto": run.SerializeToString(),
        }
        if run.idempotency_key:
            fields["idempotency_key"] = run.idempotency_key
        if revision == 0:
            try:
                await self._collection.insert_one(
                    {"_id": run.run_id, "order": ObjectId(), "team": team, **fields}, session=self.session
                )
            except DuplicateKeyError:
                return False
            return True
        written = await self._collection.update_one(
            {"_id": run.run_id, "revision": revision}, {"$set": fields}, session=self.session
        )
        return written.matched_count == 1

    @database_call
    async def page(
        self,
        model_name: str,
        state: runs_pb2.RunState.ValueType,
        request: PageRequest,
        visible_teams: frozenset[str] | None = None,
    ) -> Page[Run]:
        """Runs newest first, of one model and in one state when given, of the teams a
        caller sees (None: every team)."""
        query: Document = {}
        if visible_teams is not None:
            query["team"] = {"$in": sorted(visible_teams)}
        if model_name:
            query["model_name"] = model_name
        if state:
            query["state"] = int(state)
        return await read_page(self._collection, query, self.NEWEST_FIRST, request, _run, self.session)
