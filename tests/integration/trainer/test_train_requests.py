"""Train requests end to end through real ingest and a real registry: a version registered
with its lineage and promoted, a retrain that inherits the production spec, a worse
challenger refused, redeliveries and repeated keys that never register twice, and bad
requests that end precisely without a version."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypedDict, Unpack

import numpy as np
import pytest
from pymongo import AsyncMongoClient

from services.common.errors import NotFound
from services.common.events import Topics, encode
from services.common.flavors import flavor
from services.common.flavors.base import StoredArtifact
from services.common.kafka import DLQ_ERROR_CLASS, DLQ_ERROR_FIELD, publish
from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainStatus, TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import DataWindow, Gates, ModelSpec
from services.common.trials import recorded_trials
from services.trainer.job_store import JOBS
from services.trainer.tabular import feature_matrix
from tests.helpers.kafka import read_records
from tests.integration.trainer.conftest import Platform
from tests.unit.trainer import synthetic

FEATURES = synthetic.FEATURES


class SpecChanges(TypedDict, total=False):
    gates: Gates
    features: tuple[str, ...]


def first_spec(dataset: str, model: str, **changes: Unpack[SpecChanges]) -> ModelSpec:
    spec = synthetic.spec(
        model, dataset=dataset, families=("logistic_regression", "hist_gradient_boosting"), **changes
    )
    spec.estimators[0].search_space_json = '{"C": {"low": 0.05, "high": 20, "log": true}}'
    spec.estimators[1].params_json = '{"max_iter": 30}'
    spec.window.CopyFrom(DataWindow(dataset=dataset, max_rows=400))
    return spec


async def test_a_train_request_registers_a_promoted_version_with_its_lineage(
    platform: Platform, names: tuple[str, str]
) -> None:
    dataset, model = names
    await platform.dataset(dataset, 500)
    spec = first_spec(dataset, model, gates=Gates(min_metric=0.7, max_slice_gap=0.5))
    request_id = await platform.request(
        TrainRequest(model_name=model, spec=spec, trigger=TrainTrigger.TRAIN_TRIGGER_INITIAL)
    )
    result = await platform.results.final(request_id)
    assert result.status == TrainStatus.TRAIN_STATUS_REGISTERED, result.error
    assert result.version == 1 and result.metrics["accuracy"] > 0.8
    assert [g.name for g in result.gates] == ["min_metric", "slice_gap:color"]

    statuses = [r.status for r in platform.results.of(request_id)]
    assert statuses[0] == TrainStatus.TRAIN_STATUS_STARTED
    assert TrainStatus.TRAIN_STATUS_PROGRESS in statuses
    progress = [
        r.progress for r in platform.results.of(request_id) if r.status == TrainStatus.TRAIN_STATUS_PROGRESS
    ]
    assert progress == sorted(progress)

    version = await platform.registry.get_version(model, alias="production")
    assert version.version == 1 and version.gates_passed
    window = await platform.datasets.read_window(DataWindow(dataset=dataset, max_rows=400))
    assert version.lineage.data.content_sha256 == window.summary.content_sha256
    assert version.lineage.data.row_count == 400
    assert version.lineage.train_request_id == request_id and version.lineage.trigger == "initial"
    assert version.lineage.code_version == "test-sha"
    assert version.lineage.package_versions["scikit-learn"]
    assert version.spec.model_name == model and list(version.spec.features) == ["f0", "f1", "color", "flag"]
    trials = recorded_trials(version.params)
    assert len(trials) == version.metrics["search.trials"] > 8
    assert list(version.signature.classes) == ["0", "1"]

    _, artifact = await platform.registry.download_artifact(model, version.version)
    loaded = flavor(version.artifact.format).load(StoredArtifact.of(version, artifact))
    rows = synthetic.rows(50, seed=77)
    predicted = loaded.predict(feature_matrix(rows, FEATURES))
    truth = np.array([str(int(r.label.number_value)) for r in rows])
    assert (predicted == truth).mean() > 0.75


async def test_a_retrain_without_spec_takes_the_production_spec_and_a_worse_challenger_is_refused(
    platform: Platform, names: tuple[str, str]
) -> None:
    dataset, model = names
    await platform.dataset(dataset, 500)
    first = await platform.results.final(
        await platform.request(TrainRequest(model_name=model, spec=first_spec(dataset, model)))
    )
    assert first.status == TrainStatus.TRAIN_STATUS_REGISTERED, first.error

    retrain_id = await platform.request(
        TrainRequest(model_name=model, trigger=TrainTrigger.TRAIN_TRIGGER_DRIFT, drift_event_id="drift-1")
    )
    retrain = await platform.results.final(retrain_id)
    assert retrain.status == TrainStatus.TRAIN_STATUS_REGISTERED, retrain.error
    assert [g.name for g in retrain.gates] == ["challenger"]
    second = await platform.registry.get_version(model, retrain.version)
    assert second.lineage.parent_version == first.version
    assert second.lineage.drift_event_id == "drift-1" and second.lineage.trigger == "drift"
    assert list(second.spec.features) == ["f0", "f1", "color", "flag"]

    # Without the two features that carry the signal, the challenger must lose.
    worse = first_spec(dataset, model, features=("flag", "f1"), gates=Gates(max_regression=0.01))
    refused = await platform.results.final(await platform.request(TrainRequest(model_name=model, spec=worse)))
    assert refused.status == TrainStatus.TRAIN_STATUS_GATES_FAILED
    assert refused.error.startswith("gates failed: challenger: accuracy")
    assert "worse; may be at most 0.0100 worse" in refused.error
    stored = await platform.registry.get_version(model, refused.version)
    assert not stored.gates_passed and not stored.gates[0].passed
    production = await platform.registry.get_model(model)
    assert production.aliases["production"] == retrain.version


async def test_redelivery_and_repeated_keys_register_one_version(
    platform: Platform, names: tuple[str, str]
) -> None:
    dataset, model = names
    await platform.dataset(dataset, 300)
    spec = synthetic.spec(model, dataset=dataset)
    original = TrainRequest(
        request_id="req-" + model, idempotency_key="key-" + model, model_name=model, spec=spec
    )
    await platform.request(original)
    await platform.request(original)  # the same request delivered twice
    again = TrainRequest(
        request_id="other-" + model, idempotency_key="key-" + model, model_name=model, spec=spec
    )
    await platform.request(again)

    answers = await platform.results.wait_for(
        lambda r: (
            r.model_name == model
            and r.status in (TrainStatus.TRAIN_STATUS_REGISTERED, TrainStatus.TRAIN_STATUS_DUPLICATE)
        ),
        count=3,
    )
    registered = [a for a in answers if a.status == TrainStatus.TRAIN_STATUS_REGISTERED]
    duplicate = [a for a in answers if a.status == TrainStatus.TRAIN_STATUS_DUPLICATE]
    assert [a.request_id for a in registered] == [original.request_id] * 2
    assert [a.request_id for a in duplicate] == [again.request_id]
    assert {a.version for a in answers} == {1}
    assert "coalesced into job" in duplicate[0].error
    started = [
        r
        for r in platform.results.received
        if r.model_name == model and r.status == TrainStatus.TRAIN_STATUS_STARTED
    ]
    assert len(started) == 1
    assert (await platform.registry.get_model(model)).latest_version == 1


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda s: s.features.append("income"), "invalid_spec: unknown field 'income'"),
        (
            lambda s: setattr(s, "metric", "r2"),
            "invalid_spec: metric 'r2' does not apply to TASK_CLASSIFICATION",
        ),
        (lambda s: setattr(s, "dataset", "no-such-dataset"), "invalid_spec: dataset 'no-such-dataset'"),
        (
            lambda s: s.window.CopyFrom(DataWindow(max_rows=50)),
            "invalid_data: window too small for the holdout: 50",
        ),
        (
            lambda s: s.window.CopyFrom(DataWindow(min_rows=10_000)),
            "invalid_data: reading the window: the window has 200 rows, fewer than min_rows 10000",
        ),
        (
            lambda s: setattr(s.estimators[0], "params_json", '{"max_iter": 1}'),
            "did_not_converge: logistic_regression",
        ),
    ],
    ids=["unknown-field", "wrong-metric", "unknown-dataset", "too-small", "min-rows", "no-convergence"],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
async def test_bad_requests_fail_precisely_and_register_nothing(
    platform: Platform, names: tuple[str, str], change: object, error: str
) -> None:
    dataset, model = names
    await platform.dataset(dataset, 200)
    spec = synthetic.spec(model, dataset=dataset)
    change(spec)  # type: ignore[operator]
    result = await platform.results.final(await platform.request(TrainRequest(model_name=model, spec=spec)))
    assert result.status == TrainStatus.TRAIN_STATUS_FAILED
    assert error in result.error, result.error
    assert result.version == 0
    with pytest.raises(NotFound):
        await platform.registry.get_model(model)


async def test_a_request_without_spec_for_an_unknown_model_fails(
    platform: Platform, names: tuple[str, str]
) -> None:
    _, model = names
    result = await platform.results.final(await platform.request(TrainRequest(model_name=model)))
    assert result.status == TrainStatus.TRAIN_STATUS_FAILED
    assert (
        result.error.startswith("invalid_spec: the request carries no spec")
        and "(field spec)" in result.error
    )


async def test_undecodable_or_anonymous_requests_are_dead_lettered(platform: Platform) -> None:
    dlq = Topics.dlq(platform.topics.train_requests)
    await platform.producer.send_and_wait(platform.topics.train_requests, b"\x00 not an envelope", key=b"x")
    anonymous = encode(
        platform.topics.train_requests, TrainRequest(request_id="anon"), source="/tests", key=""
    )
    await publish(platform.producer, [anonymous])
    letters = await read_records(platform.infra.kafka_bootstrap, dlq, 2)
    reasons = sorted((dict(r.headers)[DLQ_ERROR_CLASS], dict(r.headers)[DLQ_ERROR_FIELD]) for r in letters)
    assert reasons == [(b"invalid_request", b"model_name"), (b"not_cloudevent", b"")]


async def test_the_models_stored_spec_is_used_and_a_newer_one_wins_over_the_production_one(
    platform: Platform, names: tuple[str, str]
) -> None:
    dataset, model = names
    await platform.dataset(dataset, 300)
    await platform.registry.create_model(model)
    stored = await platform.registry.put_spec(synthetic.spec(model, dataset=dataset))
    first = await platform.results.final(await platform.request(TrainRequest(model_name=model)))
    assert first.status == TrainStatus.TRAIN_STATUS_REGISTERED, first.error
    assert (
        await platform.registry.get_version(model, first.version)
    ).spec.spec_version == stored.spec_version

    fewer_features = synthetic.spec(
        model, dataset=dataset, features=("f0", "color"), gates=Gates(max_regression=0.2)
    )
    newer = await platform.registry.put_spec(fewer_features)
    second = await platform.results.final(await platform.request(TrainRequest(model_name=model)))
    assert second.status == TrainStatus.TRAIN_STATUS_REGISTERED, second.error
    version = await platform.registry.get_version(model, second.version)
    assert version.spec.spec_version == newer.spec_version > stored.spec_version
    assert list(version.signature.feature_names) == ["f0", "color"]


async def test_a_trainer_that_died_while_registering_is_not_followed_by_a_second_version(
    platform: Platform, names: tuple[str, str]
) -> None:
    dataset, model = names
    await platform.dataset(dataset, 300)
    request = TrainRequest(request_id="r-" + model, idempotency_key="k-" + model, model_name=model)
    request.spec.CopyFrom(synthetic.spec(model, dataset=dataset))
    first = await platform.results.final(await platform.request(request))
    assert first.status == TrainStatus.TRAIN_STATUS_REGISTERED and first.version == 1

    # Put the job back as a trainer killed between the registry's answer and its own
    # bookkeeping would have left it: registering, its lease lapsed, no result.
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(platform.infra.mongodb_uri)
    try:
        await client[platform.topics.prefix][JOBS].update_one(
            {"_id": request.idempotency_key},
            {
                "$set": {
                    "state": "registering",
                    "owner": "dead",
                    "lease_until": datetime.fromtimestamp(0, UTC),
                },
                "$unset": {"result": ""},
            },
        )
    finally:
        await client.close()
    already = len(platform.results.of(request.request_id))
    await platform.request(request)
    answers = await platform.results.wait_for(
        lambda r: r.request_id == request.request_id and r.status == TrainStatus.TRAIN_STATUS_REGISTERED,
        count=2,
    )
    assert answers[1].version == 1
    assert TrainStatus.TRAIN_STATUS_STARTED not in [
        r.status for r in platform.results.of(request.request_id)[already:]
    ]
    assert (await platform.registry.get_model(model)).latest_version == 1


async def test_a_job_caught_registering_without_a_version_is_trained_again(
    platform: Platform, names: tuple[str, str]
) -> None:
    dataset, model = names
    await platform.dataset(dataset, 300)
    request = TrainRequest(request_id="r-" + model, idempotency_key="k-" + model, model_name=model)
    request.spec.CopyFrom(synthetic.spec(model, dataset=dataset))
    assert (await platform.results.final(await platform.request(request))).version == 1

    # A dead trainer got as far as "registering" after version 1 existed, but its call
    # never reached the registry: the next trainer must register, once.
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(platform.infra.mongodb_uri)
    try:
        await client[platform.topics.prefix][JOBS].update_one(
            {"_id": request.idempotency_key},
            {
                "$set": {
                    "state": "registering",
                    "latest_before_registering": 1,
                    "owner": "dead",
                    "lease_until": datetime.fromtimestamp(0, UTC),
                },
                "$unset": {"result": ""},
            },
        )
    finally:
        await client.close()
    await platform.request(request)
    answers = await platform.results.wait_for(
        lambda r: r.request_id == request.request_id and r.status == TrainStatus.TRAIN_STATUS_REGISTERED,
        count=2,
    )
    assert answers[1].version == 2
    assert (await platform.registry.get_model(model)).latest_version == 2
