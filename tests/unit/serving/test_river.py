"""River models (signed pickles) are served row by row, and only when their HMAC verifies."""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import pytest

from services.common.artifacts import sha256_hex
from services.common.flavors import flavor
from services.common.flavors.base import SIGNATURE_HMAC_PARAM
from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.common.proto.mlops.v1.model_pb2 import Task
from services.serving.errors import InvalidInput
from services.serving.inference import InferenceRequest, InferenceService
from services.serving.models import ModelManager, ModelState
from services.serving.tensors import Tensor
from services.trainer.river_models import RiverEstimator
from services.trainer.tabular import Table, build_table
from tests.unit.serving.conftest import Fitted
from tests.unit.serving.test_models import MemoryRegistry
from tests.unit.trainer import synthetic

KEY = b"k" * 32
FEATURES = synthetic.FEATURES
NAMES = [f.name for f in FEATURES]


@pytest.fixture(scope="module")
def table() -> Table:
    return build_table(synthetic.rows(300, seed=4), FEATURES, Task.TASK_CLASSIFICATION, "label")


@pytest.fixture(scope="module")
def online(table: Table) -> RiverEstimator:
    """Learned the way the trainer learns its online flavor."""
    return RiverEstimator("river_logistic_regression", Task.TASK_CLASSIFICATION, {}, FEATURES).fit(
        table.X, table.y
    )


def river_version(
    name: str,
    number: int,
    model: Any,
    task: Task.ValueType = Task.TASK_CLASSIFICATION,
    classes: tuple[str, ...] = ("0", "1"),
    key: bytes = KEY,
) -> tuple[registry_pb2.ModelVersion, bytes]:
    """What the trainer registers for a river model: a signed pickle, its HMAC in the params."""
    saved = flavor("river-hmac").save(model, signing_key=key)
    data, signature_hmac = saved.data, saved.signature_hmac
    version = registry_pb2.ModelVersion(
        model_name=name,
        version=number,
        artifact=registry_pb2.Artifact(sha256=sha256_hex(data), size_bytes=len(data), format="river-hmac"),
        params={
            "family": "river_logistic_regression"
            if task == Task.TASK_CLASSIFICATION
            else "river_linear_regression",
            "feature_kinds": json.dumps({f.name: f.kind.value for f in FEATURES}),
            SIGNATURE_HMAC_PARAM: signature_hmac,
        },
        signature=model_pb2.Signature(
            inputs=[model_pb2.TensorSpec(name="features", datatype="FP64", shape=[-1, 4], allow_nan=True)],
            feature_names=NAMES,
            classes=list(classes) if task == Task.TASK_CLASSIFICATION else [],
            task=task,
        ),
    )
    return version, data


def columns(X: np.ndarray) -> list[Tensor]:
    """One tensor per feature, the category as BYTES: how clients send text categories."""
    tensors = []
    for i, name in enumerate(NAMES):
        if name == "color":
            data = np.array([str(v).encode() for v in X[:, i]], dtype=object)
            tensors.append(Tensor(name, "BYTES", (len(X),), data))
        else:
            tensors.append(Tensor(name, "FP64", (len(X),), X[:, i].astype(np.float64)))
    return tensors


def registry_with(
    name: str, entries: list[tuple[registry_pb2.ModelVersion, bytes]], production: int
) -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.models[name] = registry_pb2.Model(name=name)
    for version, data in entries:
        registry.versions[(name, int(version.version))] = (version, data)
    registry.alias(name, "production", production)
    return registry


async def test_a_river_classifier_answers_row_by_row_as_the_trainer_evaluated_it(
    table: Table, online: RiverEstimator
) -> None:
    registry = registry_with("stream", [river_version("stream", 1, online.model)], production=1)
    manager = ModelManager(registry, signing_key=KEY)
    await manager.sync_all()
    service = InferenceService(manager, max_rows=100)
    X = table.X[:20]
    response = await service.infer(InferenceRequest(model_name="stream", decode_inputs=lambda: columns(X)))
    outputs = {o.name: o.data for o in response.outputs}
    np.testing.assert_allclose(outputs["probabilities"], online.predict_proba(X))
    assert outputs["label"].tolist() == online.predict(X).tolist()
    predictor = manager.route("stream").target.predictor
    assert (predictor.platform, predictor.family) == ("river", "river_logistic_regression")

    # Missing values: NaN numbers are imputed by the model, a missing category is its own.
    gaps = X[:2].copy()
    gaps[0, 0] = np.nan
    gaps[1, 2] = np.nan
    np.testing.assert_allclose(predictor.predict(gaps)["probabilities"], online.predict_proba(gaps))

    # A numeric feature sent as text is refused for that request, naming the feature.
    wrong = columns(X[:1])
    wrong[0] = Tensor("f0", "BYTES", (1,), np.array([b"high"], dtype=object))
    with pytest.raises(InvalidInput, match="feature 'f0' is numeric; got text 'high'"):
        await service.infer(InferenceRequest(model_name="stream", decode_inputs=lambda: wrong))
    # No exact attribution for river families: refused by name.
    with pytest.raises(InvalidInput, match="model family 'river_logistic_regression' does not support"):
        await service.infer(
            InferenceRequest(
                model_name="stream", decode_inputs=lambda: columns(X), parameters={"explain": True}
            )
        )


async def test_a_river_regressor_returns_values(table: Table) -> None:
    y = np.array([2.0 * row[0] + (1.0 if row[2] == "red" else 0.0) for row in table.X])
    regressor = RiverEstimator("river_linear_regression", Task.TASK_REGRESSION, {}, FEATURES).fit(table.X, y)
    registry = registry_with(
        "level", [river_version("level", 1, regressor.model, Task.TASK_REGRESSION)], production=1
    )
    manager = ModelManager(registry, signing_key=KEY)
    await manager.sync_all()
    predictor = manager.route("level").target.predictor
    np.testing.assert_allclose(predictor.predict(table.X[:10])["value"], regressor.predict(table.X[:10]))


class Planted:
    """A pickle that runs code when loaded: what a forged artifact would carry."""

    ran: list[str] = []

    def __reduce__(self) -> tuple[Any, ...]:
        return (Planted.ran.append, ("unpickled",))


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("forged", "HMAC does not verify"),
        ("wrong_key", "HMAC does not verify"),
        ("no_key", "MLOPS_ARTIFACT_SIGNING_KEY, and none is set"),
        ("unsigned", f"no '{SIGNATURE_HMAC_PARAM}' parameter"),
    ],
)
async def test_an_unverified_river_version_is_refused_unpickled_and_the_current_one_keeps_serving(
    classifier: Fitted, online: RiverEstimator, case: str, reason: str
) -> None:
    registry = MemoryRegistry()
    registry.add("stream", 1, classifier)
    registry.alias("stream", "production", 1)
    version, data = river_version("stream", 2, online.model)
    if case == "forged":
        # Someone who can write the store but not sign: new bytes, new digest, the old HMAC.
        data = pickle.dumps(Planted())
        version.artifact.sha256 = sha256_hex(data)
    elif case == "wrong_key":
        version, data = river_version("stream", 2, Planted(), key=b"x" * 32)
    elif case == "unsigned":
        del version.params[SIGNATURE_HMAC_PARAM]
    registry.versions[("stream", 2)] = (version, data)
    manager = ModelManager(registry, signing_key=None if case == "no_key" else KEY)
    await manager.sync_all()
    registry.alias("stream", "production", 2)
    await manager.sync("stream")

    model = manager.models["stream"]
    assert model.state is ModelState.READY
    assert "version 2 (production) cannot be served: " in model.reason and reason in model.reason
    route = manager.route("stream")
    assert route.target.number == 1
    np.testing.assert_allclose(
        route.target.predictor.predict(classifier.X[:2])["probabilities"],
        classifier.estimator.predict_proba(classifier.X[:2]),
    )
    assert Planted.ran == []
