"""A model whose spec says ``training: federated`` is the federation service's: the trainer
leaves its train requests (a drift's retrain, which carries no spec, included) unanswered,
and goes on with the next request of the same model in order."""

from __future__ import annotations

from prometheus_client import REGISTRY

from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainStatus, TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import TRAINING_CENTRAL, TRAINING_FEDERATED
from tests.integration.trainer.conftest import Platform
from tests.unit.trainer import synthetic


def left_to_federation() -> float:
    return REGISTRY.get_sample_value("mlops_trainer_jobs_total", {"outcome": "federated"}) or 0.0


async def test_requests_for_a_federated_model_are_left_to_the_federation(
    platform: Platform, names: tuple[str, str]
) -> None:
    dataset, model = names
    await platform.registry.create_model(model)
    federated = synthetic.spec(model, dataset=dataset)
    federated.training = TRAINING_FEDERATED
    await platform.registry.put_spec(federated)
    before = left_to_federation()

    drift = await platform.request(TrainRequest(model_name=model, trigger=TrainTrigger.TRAIN_TRIGGER_DRIFT))
    with_spec = await platform.request(TrainRequest(model_name=model, spec=federated))
    # The same model's next request, central and bound to fail at once (no such dataset):
    # keyed alike, it is handled after the two above, so its answer means they were seen.
    central = synthetic.spec(model, dataset=f"{dataset}-missing")
    central.training = TRAINING_CENTRAL
    after = await platform.results.final(await platform.request(TrainRequest(model_name=model, spec=central)))

    assert after.status == TrainStatus.TRAIN_STATUS_FAILED
    assert platform.results.of(drift) == [] and platform.results.of(with_spec) == []
    assert left_to_federation() == before + 2
