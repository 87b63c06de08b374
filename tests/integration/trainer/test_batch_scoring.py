"""Batch scoring end to end: real ingest, registry, serving and trainer on the session's
broker and database. A model the trainer trained on a dataset with a derived feature
scores the dataset's stored window as a job: every row scored exactly once with what
serving answers online for the same row, the lineage in the result, the scores readable
in the collection and on the topic, a repeated request re-reported and an interrupted job
resumed without scoring a row twice; ``mlops batch score`` follows a job to its end."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pymongo import AsyncMongoClient

from services.common.auth import Scope
from services.common.clients.inference import InferenceClient
from services.common.events import encode
from services.common.kafka import publish
from services.common.proto.mlops.v1.batch_pb2 import BatchScore, BatchScoreRequest, BatchScoreResult
from services.common.proto.mlops.v1.events_pb2 import FeatureRow, TrainRequest, TrainStatus
from services.common.proto.mlops.v1.model_pb2 import DataWindow, DerivedFeature
from services.trainer.batch import column_values, raw_columns
from services.trainer.batch_store import JOBS, SCORES, BatchStore
from tests.helpers.cli import Cli
from tests.helpers.kafka import TopicReader
from tests.integration.trainer.conftest import Platform
from tests.unit.trainer import synthetic

ROWS = 300
FINAL = {BatchScoreResult.STATE_SUCCEEDED, BatchScoreResult.STATE_FAILED}


async def trained_model(platform: Platform, dataset: str, model: str) -> None:
    """``dataset`` with an hour-of-day derived feature, and ``model`` trained on it and served."""
    schema = synthetic.schema(dataset)
    schema.derived.append(DerivedFeature(name="hour", function="hour_of_day", inputs=["ts"]))
    await platform.datasets.register_schema(schema)
    await platform.add_events(dataset, synthetic.events(ROWS, 3))
    spec = synthetic.spec(model, dataset=dataset, features=("f0", "f1", "color", "flag", "hour"))
    spec.window.CopyFrom(DataWindow(dataset=dataset))
    request_id = await platform.request(TrainRequest(model_name=model, spec=spec))
    result = await platform.results.final(request_id)
    assert result.status == TrainStatus.TRAIN_STATUS_REGISTERED, result.error
    assert platform.serving.manager is not None
    await platform.serving.manager.wait_for(lambda models: model in models, within=30)


async def submit(platform: Platform, request: BatchScoreRequest) -> None:
    await publish(
        platform.producer,
        [encode(platform.topics.batch_requests, request, source="/tests", key=request.job_id)],
    )


async def test_a_window_is_scored_once_per_row_as_serving_answers_with_its_lineage(
    platform: Platform, names: tuple[str, str]
) -> None:
    dataset, model = names
    await trained_model(platform, dataset, model)
    version = await platform.registry.get_version(model, alias="production")
    assert [d.name for d in version.signature.derived] == ["hour"]  # serving derives it from ts
    job = "job-" + uuid.uuid4().hex
    async with (
        TopicReader(
            platform.infra.kafka_bootstrap, platform.topics.batch_results, BatchScoreResult
        ) as results,
        TopicReader(platform.infra.kafka_bootstrap, platform.topics.batch_scores, BatchScore) as topic,
    ):
        await submit(
            platform, BatchScoreRequest(job_id=job, model_name=model, window=DataWindow(dataset=dataset))
        )
        (result,) = await results.wait_for(lambda r: r.job_id == job and r.state in FINAL, within=60)
        assert result.state == BatchScoreResult.STATE_SUCCEEDED, result.error
        assert (result.version, result.rows_scored) == (version.version, ROWS)
        # Lineage: the window as read, the same content hash ingest gives for it.
        window = await platform.datasets.read_window(result.window.window, labelled_only=False)
        assert result.window.content_sha256 == window.summary.content_sha256
        assert result.window.row_count == ROWS
        await topic.wait_until(
            lambda scores: (
                {s.event_id for s in scores if s.job_id == job} >= {r.event_id for r in window.rows}
            )
        )

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(platform.infra.mongodb_uri)
        try:
            database = client[platform.topics.prefix]
            stored = {d["event_id"]: d async for d in database[SCORES].find({"job_id": job})}
            assert len(stored) == ROWS

            # Each stored score is what serving answers online for the same row's raw fields.
            sample = window.rows[:20]
            online = await ask_serving(platform, model, version.signature, sample)
            np.testing.assert_allclose(
                [stored[row.event_id]["probabilities"] for row in sample], online, rtol=0, atol=1e-12
            )

            # The same request again: the job's outcome again, nothing scored twice.
            await submit(
                platform, BatchScoreRequest(job_id=job, model_name=model, window=DataWindow(dataset=dataset))
            )
            await results.wait_for(lambda r: r.job_id == job and r.state in FINAL, count=2, within=30)
            assert await database[SCORES].count_documents({"job_id": job}) == ROWS

            # Interrupted: 100 scores lost and no outcome recorded. The job resumes and scores those only.
            lost = [row.event_id for row in window.rows[100:200]]
            await database[SCORES].delete_many({"job_id": job, "event_id": {"$in": lost}})
            await database[JOBS].update_one({"_id": job}, {"$unset": {"result": ""}})
            published_before = sum(1 for s in topic.received if s.job_id == job)
            await submit(
                platform, BatchScoreRequest(job_id=job, model_name=model, window=DataWindow(dataset=dataset))
            )
            resumed = await results.wait_for(
                lambda r: r.job_id == job and r.state in FINAL, count=3, within=60
            )
            assert resumed[-1].state == BatchScoreResult.STATE_SUCCEEDED and resumed[-1].rows_scored == ROWS
            assert await database[SCORES].count_documents({"job_id": job}) == ROWS
            await topic.wait_until(
                lambda scores: sum(1 for s in scores if s.job_id == job) >= published_before + 100
            )
            rescored = [s.event_id for s in topic.received if s.job_id == job][published_before:]
            assert sorted(rescored) == sorted(lost)
        finally:
            await client.close()


async def ask_serving(platform: Platform, model: str, signature: Any, rows: list[FeatureRow]) -> np.ndarray:
    token = platform.infra.token(Scope.PREDICT)
    async with InferenceClient(f"127.0.0.1:{platform.serving.grpc_port}", lambda: token) as serving:
        answer = await serving.infer_columns(
            model, {name: column_values(rows, name, "ts") for name in raw_columns(signature)}
        )
    return answer.outputs["probabilities"]


async def test_mlops_batch_score_follows_the_job_and_shows_its_lineage(
    platform: Platform, names: tuple[str, str], tmp_path: Path
) -> None:
    dataset, model = names
    await trained_model(platform, dataset, model)
    cli = Cli(f"127.0.0.1:{platform.registry_app.grpc_port}", "", tmp_path, group="batch")
    cli.env |= {
        "MLOPS_KAFKA_BOOTSTRAP_SERVERS": platform.infra.kafka_bootstrap,
        "MLOPS_TOPIC_PREFIX": platform.topics.prefix,
    }
    args = ("score", model, "--dataset", dataset, "--to", "2030-01-01T00:00:00Z", "--timeout", "60")
    code, out, err = await cli(*args)
    assert code == 0, err
    assert f"scored {ROWS} rows of {dataset}" in out and "window sha256 " in out
    result = await cli.json(*args)
    assert result["state"] == "STATE_SUCCEEDED" and int(result["rows_scored"]) == ROWS
    assert len(result["window"]["content_sha256"]) == 64 and result["scores_collection"] == SCORES


async def test_a_score_saved_twice_is_stored_once(platform: Platform) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(platform.infra.mongodb_uri)
    try:
        store = BatchStore(client[platform.topics.prefix])
        await store.ensure_indexes()
        job = "twice-" + uuid.uuid4().hex
        scores = [
            BatchScore(job_id=job, model_name="m", version=1, event_id=f"e{i}", value=float(i))
            for i in range(5)
        ]
        await store.save(scores[:3])
        await store.save(scores)  # a chunk scored again around a rebalance: only the new rows land
        assert await store.count(job) == 5
        assert await store.scored(job, ["e0", "e4", "nope"]) == {"e0", "e4"}
    finally:
        await client.close()
