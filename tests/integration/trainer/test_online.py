"""The online flavor end to end: a river model trained from a window, signed and promoted;
then learning from the feature topic and registered again as a snapshot whose lineage
names exactly the rows it learned."""

from __future__ import annotations

from services.common.flavors import flavor
from services.common.flavors.base import StoredArtifact
from services.common.flavors.river import RiverRuntime
from services.common.proto.mlops.v1.events_pb2 import ModelEventType, TrainRequest, TrainStatus
from services.common.proto.mlops.v1.model_pb2 import DataWindow, Gates
from tests.integration.trainer.conftest import SIGNING_KEY, Platform
from tests.unit.trainer import synthetic


async def wait_for_version(platform: Platform, model: str, version: int) -> None:
    created = ModelEventType.MODEL_EVENT_TYPE_VERSION_CREATED
    await platform.model_events.wait_for(
        lambda e: e.model_name == model and e.type == created and e.version == version
    )


async def test_a_river_model_is_trained_signed_and_keeps_learning_from_the_stream(
    platform: Platform, names: tuple[str, str]
) -> None:
    dataset, model = names
    await platform.dataset(dataset, 400)
    spec = synthetic.spec(
        model, dataset=dataset, families=("river_logistic_regression",), gates=Gates(min_metric=0.7)
    )
    spec.window.CopyFrom(DataWindow(dataset=dataset))
    result = await platform.results.final(await platform.request(TrainRequest(model_name=model, spec=spec)))
    assert result.status == TrainStatus.TRAIN_STATUS_REGISTERED, result.error
    first = await platform.registry.get_version(model, alias="production")
    assert first.artifact.format == "river-hmac" and first.tags["flavor"] == "river-hmac"
    _, data = await platform.registry.download_artifact(model, first.version)
    river = flavor("river-hmac").load(StoredArtifact.of(first, data), signing_key=SIGNING_KEY.encode())
    assert isinstance(river, RiverRuntime)
    assert set(river.model.predict_proba_one({"f0": 2.0, "f1": 0.0, "color": "red", "flag": 0.0})) == {
        "0",
        "1",
    }

    # A hundred newer labelled events: exactly one snapshot's worth.
    await platform.add_events(dataset, synthetic.events(100, seed=1, first_minute=400))
    await wait_for_version(platform, model, first.version + 1)
    snapshot = await platform.registry.get_version(model, first.version + 1)
    assert snapshot.lineage.parent_version == first.version and snapshot.lineage.trigger == "online"
    assert snapshot.lineage.data.row_count == 100 and snapshot.metrics["online.rows"] == 100
    assert snapshot.metrics["accuracy"] > 0.7 and snapshot.gates_passed
    learned = snapshot.lineage.data.window
    assert learned.start_time.ToSeconds() > first.lineage.data.window.end_time.ToSeconds()
    same_rows = await platform.datasets.read_window(
        DataWindow(dataset=dataset, start_time=learned.start_time, end_time=learned.end_time)
    )
    assert snapshot.lineage.data.content_sha256 == same_rows.summary.content_sha256
    assert (await platform.registry.get_model(model)).aliases["production"] == snapshot.version
    _, data = await platform.registry.download_artifact(model, snapshot.version)
    flavor("river-hmac").load(StoredArtifact.of(snapshot, data), signing_key=SIGNING_KEY.encode())
