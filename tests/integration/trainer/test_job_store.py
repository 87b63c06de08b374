"""The job store on the real database: one job per key, one running job per model, and
leases that let a live trainer keep its job and a dead one's job be taken over."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from services.common.mongo import Document
from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainResult, TrainStatus
from services.trainer.job_store import Claim, JobState, JobStore
from tests.conftest import Infra


@pytest.fixture
async def database(infra: Infra, unique: str) -> AsyncIterator[object]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(infra.mongodb_uri, tz_aware=True)
    try:
        yield client[unique]
    finally:
        await client.close()


def stores(database: object, lease: float = 30.0) -> tuple[JobStore, JobStore]:
    return JobStore(database, "trainer-a", lease), JobStore(database, "trainer-b", lease)  # type: ignore[arg-type]


def request(key: str, model: str = "m", request_id: str = "r1") -> TrainRequest:
    return TrainRequest(request_id=request_id, idempotency_key=key, model_name=model)


async def test_a_key_is_one_job_and_its_outcome_answers_every_later_claim(database: object) -> None:
    a, b = stores(database)
    claim, job = await a.claim("k1", request("k1"))
    assert claim is Claim.NEW and job.owner == "trainer-a" and job.request == request("k1")
    assert (await b.claim("k1", request("k1", request_id="r2")))[0] is Claim.BUSY
    result = TrainResult(
        request_id="r1", model_name="m", status=TrainStatus.TRAIN_STATUS_REGISTERED, version=3
    )
    await a.finish("k1", "m", JobState.REGISTERED, result)
    claim, finished = await b.claim("k1", request("k1", request_id="r2"))
    assert claim is Claim.FINISHED
    assert finished.result == result and finished.request_id == "r1" and finished.state is JobState.REGISTERED


async def test_the_owner_may_resume_its_own_job_after_a_transient_failure(database: object) -> None:
    a, _ = stores(database)
    await a.claim("k2", request("k2"))
    claim, job = await a.claim("k2", request("k2"))
    assert claim is Claim.RESUMED and job.attempts == 2


async def test_a_job_whose_lease_lapsed_is_taken_over_with_its_registration_state(database: object) -> None:
    a, _ = stores(database, lease=0.0)
    _, b = stores(database)
    await a.claim("k3", request("k3"))
    assert await a.registering("k3", latest_version=7)
    claim, job = await b.claim("k3", request("k3", request_id="r9"))
    assert claim is Claim.RESUMED
    assert job.owner == "trainer-b" and job.state is JobState.REGISTERING
    assert job.latest_before_registering == 7 and job.request_id == "r1"
    # The old owner has lost it: it may neither renew nor register.
    assert not await a.renew("k3", "m")
    assert not await a.registering("k3", latest_version=7)
    # The new owner found no version from the old attempt: it registers afresh.
    assert await b.registering("k3", latest_version=8)
    assert (await b.get("k3")).latest_before_registering == 8  # type: ignore[union-attr]


async def test_one_model_runs_one_job_at_a_time(database: object) -> None:
    a, b = stores(database)
    assert await a.lease("credit", "job-1") == ""
    assert await a.lease("credit", "job-1") == ""  # holding it already is fine
    assert await b.lease("credit", "job-2") == "job-1"
    assert await b.lease("other-model", "job-3") == ""
    await a.release_lease("credit", "job-1")
    assert await b.lease("credit", "job-2") == ""


async def test_abandoning_a_job_frees_it_for_another_trainer_at_once(database: object) -> None:
    a, b = stores(database)
    await a.claim("k4", request("k4", model="n"))
    assert await a.lease("n", "k4") == ""
    await a.abandon("k4", "n")
    assert (await b.claim("k4", request("k4", model="n")))[0] is Claim.RESUMED
    assert await b.lease("n", "k4") == ""
