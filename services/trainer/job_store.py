"""The trainer's own record of jobs, in MongoDB: what makes redelivery and storms safe.

- A job is keyed by the request's idempotency key (its request id when it has none):
  the unique ``_id`` makes every request with that key the same job, run once.
- A running job is *leased* by one trainer, which renews the lease while it works. A
  trainer that dies stops renewing; once the lease lapses, whoever receives the
  redelivered request takes the job over.
- A model is leased the same way, so one model never has two jobs running at once,
  even when requests for it arrive on different partitions or trainers.
- Before calling the registry, the job records the model's latest version number; a
  trainer taking over a job caught in that state first looks for the version the dead
  one may have registered, so a kill at the worst moment still yields one version.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.common.mongo import Document
from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainResult

JOBS = "trainer_jobs"
MODEL_LEASES = "trainer_model_leases"


class JobState(enum.StrEnum):
    RUNNING = "running"
    REGISTERING = "registering"
    REGISTERED = "registered"
    GATES_FAILED = "gates_failed"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.REGISTERED, JobState.GATES_FAILED, JobState.FAILED)


class Claim(enum.Enum):
    NEW = "new"
    """No job had this key: it is ours."""
    RESUMED = "resumed"
    """An unfinished job whose previous owner (perhaps us, before a retry) let its lease lapse."""
    FINISHED = "finished"
    """The job is done; its result is stored."""
    BUSY = "busy"
    """Another live trainer holds the job."""


@dataclass(frozen=True)
class Job:
    key: str
    model_name: str
    request_id: str
    state: JobState
    owner: str
    attempts: int
    latest_before_registering: int = 0
    version: int = 0
    result: TrainResult | None = None
    # The request that opened the job: a job resumed by a later request still runs this one.
    request: TrainRequest | None = None

    @classmethod
    def from_document(cls, doc: Document) -> Job:
        result = TrainResult.FromString(doc["result"]) if doc.get("result") else None
        request = TrainRequest.FromString(doc["request"]) if doc.get("request") else None
        return cls(
            key=doc["_id"],
            model_name=doc["model_name"],
            request_id=doc["request_id"],
            state=JobState(doc["state"]),
            owner=doc.get("owner", ""),
            attempts=int(doc.get("attempts", 1)),
            latest_before_registering=int(doc.get("latest_before_registering", 0)),
            version=int(doc.get("version", 0)),
            result=result,
            request=request,
        )


class JobStore:
    def __init__(self, database: AsyncDatabase[Document], owner: str, lease_seconds: float):
        self._jobs: AsyncCollection[Document] = database[JOBS]
        self._leases: AsyncCollection[Document] = database[MODEL_LEASES]
        self.owner = owner
        self._lease = timedelta(seconds=lease_seconds)

    async def ensure_indexes(self) -> None:
        await self._jobs.create_index([("model_name", 1), ("created_at", -1)])

    def _until(self) -> datetime:
        return datetime.now(UTC) + self._lease

    async def claim(self, key: str, request: TrainRequest) -> tuple[Claim, Job]:
        """Claim the job ``key`` for this trainer, or say why not."""
        now = datetime.now(UTC)
        doc: Document = {
            "_id": key,
            "model_name": request.model_name,
            "request_id": request.request_id,
            "request": request.SerializeToString(),
            "state": JobState.RUNNING.value,
            "owner": self.owner,
            "lease_until": self._until(),
            "attempts": 1,
            "created_at": now,
            "updated_at": now,
            "coalesced": [],
        }
        try:
            await self._jobs.insert_one(doc)
            return Claim.NEW, Job.from_document(doc)
        except DuplicateKeyError:
            pass
        taken = await self._jobs.find_one_and_update(
            {
                "_id": key,
                "state": {"$in": [JobState.RUNNING.value, JobState.REGISTERING.value]},
                "$or": [{"owner": self.owner}, {"lease_until": {"$lt": now}}],
            },
            {
                "$set": {"owner": self.owner, "lease_until": self._until(), "updated_at": now},
                "$inc": {"attempts": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        if taken is not None:
            return Claim.RESUMED, Job.from_document(taken)
        current = await self._jobs.find_one({"_id": key})
        if current is None:  # deleted between the two calls: try again from the start
            return await self.claim(key, request)
        job = Job.from_document(current)
        return (Claim.FINISHED if job.state.finished else Claim.BUSY), job

    async def note_coalesced(self, key: str, request_id: str) -> None:
        """Remember a request that was answered by this job instead of running its own."""
        await self._jobs.update_one({"_id": key}, {"$addToSet": {"coalesced": request_id}})

    async def lease(self, name: str, holder: str) -> str:
        """Take the lease ``name`` (a model's, for one job at a time) for ``holder``.

        The empty string when taken (or already held by ``holder``), else the current holder.
        """
        now = datetime.now(UTC)
        try:
            await self._leases.update_one(
                {"_id": name, "$or": [{"job": holder}, {"lease_until": {"$lt": now}}]},
                {"$set": {"job": holder, "owner": self.owner, "lease_until": self._until()}},
                upsert=True,
            )
            return ""
        except DuplicateKeyError:
            current = await self._leases.find_one({"_id": name})
            return str(current["job"]) if current else ""

    async def renew_lease(self, name: str, holder: str) -> bool:
        renewed = await self._leases.update_one(
            {"_id": name, "job": holder}, {"$set": {"lease_until": self._until()}}
        )
        return renewed.matched_count == 1

    async def release_lease(self, name: str, holder: str) -> None:
        await self._leases.update_one(
            {"_id": name, "job": holder}, {"$set": {"lease_until": datetime.fromtimestamp(0, UTC)}}
        )

    async def renew(self, key: str, model_name: str) -> bool:
        """Extend both leases; False when the job is no longer ours (another trainer took it over)."""
        until = self._until()
        renewed = await self._jobs.update_one(
            {
                "_id": key,
                "owner": self.owner,
                "state": {"$in": [JobState.RUNNING.value, JobState.REGISTERING.value]},
            },
            {"$set": {"lease_until": until}},
        )
        await self.renew_lease(model_name, key)
        return renewed.matched_count == 1

    async def registering(self, key: str, latest_version: int) -> bool:
        """Record that registration is about to start; False if the job is no longer ours.

        A job taken over while registering, whose earlier attempt left no version, is
        registering again: the latest version is recorded afresh.
        """
        updated = await self._jobs.update_one(
            {
                "_id": key,
                "owner": self.owner,
                "state": {"$in": [JobState.RUNNING.value, JobState.REGISTERING.value]},
            },
            {
                "$set": {
                    "state": JobState.REGISTERING.value,
                    "latest_before_registering": latest_version,
                    "lease_until": self._until(),
                    "updated_at": datetime.now(UTC),
                }
            },
        )
        return updated.matched_count == 1

    async def finish(self, key: str, model_name: str, state: JobState, result: TrainResult) -> None:
        """Store the outcome and free the model for its next job."""
        update: dict[str, Any] = {
            "state": state.value,
            "version": int(result.version),
            "result": result.SerializeToString(),
            "error": result.error,
            "updated_at": datetime.now(UTC),
        }
        await self._jobs.update_one({"_id": key, "owner": self.owner}, {"$set": update})
        await self.release_lease(model_name, key)

    async def abandon(self, key: str, model_name: str) -> None:
        """Let go of an unfinished job at once (on shutdown), so another trainer need not wait out the lease."""
        expired = datetime.fromtimestamp(0, UTC)
        await self._jobs.update_one({"_id": key, "owner": self.owner}, {"$set": {"lease_until": expired}})
        await self.release_lease(model_name, key)

    async def get(self, key: str) -> Job | None:
        doc = await self._jobs.find_one({"_id": key})
        return Job.from_document(doc) if doc else None
