"""Every upload is verified by its flavor before a version is stored: a pickle posing as any
format, or a skops file holding an untrusted type, is INVALID_ARGUMENT (400) naming the
problem, and leaves no version, no audit of a change and no GridFS file or chunk behind.
Models made outside the platform, in each flavor's own format, are accepted."""

from __future__ import annotations

import json
import pickle

import httpx
import lightgbm
import numpy as np
import pytest
import skops.io as sio
import xgboost
from google.protobuf import json_format
from skl2onnx import to_onnx
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from services.common.clients.registry import RegistryClient
from services.common.errors import InvalidArgument
from services.registry.app import RegistryApp
from tests.helpers.artifacts import artifact_of
from tests.integration.registry.helpers import metadata


async def stored_artifacts(app: RegistryApp) -> tuple[int, int, int]:
    """GridFS files, GridFS chunks and digest index entries."""
    assert app.registry is not None
    db = app.registry._store.db
    return (
        await db["artifacts.files"].count_documents({}),
        await db["artifacts.chunks"].count_documents({}),
        await db["artifacts"].count_documents({}),
    )


@pytest.fixture(scope="module")
def pickled() -> bytes:
    """A pickle bigger than several of the registry's 64 KiB chunks, so some were written."""
    X, y = make_classification(n_samples=200, n_features=4, random_state=0)
    return pickle.dumps(
        {"model": LogisticRegression().fit(X, y), "weights": np.random.default_rng(0).random(40_000)}
    )


@pytest.mark.parametrize("flavor_name", ["skops", "xgboost", "lightgbm", "onnx"])
async def test_a_pickle_posing_as_a_flavor_is_refused_and_nothing_is_stored(
    admin: RegistryClient, registry_app: RegistryApp, model_name: str, pickled: bytes, flavor_name: str
) -> None:
    await admin.create_model(model_name)
    before = await stored_artifacts(registry_app)
    with pytest.raises(InvalidArgument) as caught:
        await admin.create_version(metadata(model_name, pickled, artifact_format=flavor_name), pickled)
    assert (
        f"metadata.artifact: {flavor_name} artifact refused: the bytes are a Python pickle, which the platform "
        "never loads" in caught.value.message
    )
    assert (await admin.get_model(model_name)).latest_version == 0
    assert await stored_artifacts(registry_app) == before


async def test_a_skops_file_with_an_untrusted_type_is_refused_over_both_transports(
    admin: RegistryClient, registry_app: RegistryApp, http: httpx.AsyncClient, model_name: str
) -> None:
    await admin.create_model(model_name)
    hostile = sio.dumps({"payload": sio.dumps, "padding": np.zeros(30_000)})
    before = await stored_artifacts(registry_app)
    with pytest.raises(InvalidArgument) as caught:
        await admin.create_version(metadata(model_name, hostile), hostile)
    assert "types outside the trusted list: skops.io._persist.dumps" in caught.value.message

    meta = json_format.MessageToDict(metadata(model_name, hostile), preserving_proto_field_name=True)
    answer = await http.post(
        f"/v1/models/{model_name}/versions",
        data={"metadata": json.dumps(meta)},
        files={"artifact": ("model.skops", hostile)},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == "metadata.artifact"
    assert "types outside the trusted list" in answer.json()["detail"]
    assert (await admin.get_model(model_name)).latest_version == 0
    assert await stored_artifacts(registry_app) == before


async def test_models_made_outside_the_platform_are_accepted_in_their_own_formats(
    admin: RegistryClient, model_name: str
) -> None:
    X, y = make_classification(n_samples=200, n_features=2, n_informative=2, n_redundant=0, random_state=0)
    models = {
        "xgboost": xgboost.XGBClassifier(n_estimators=3).fit(X, y),
        "lightgbm": lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(X, y),
        "onnx": to_onnx(LogisticRegression().fit(X, y), X[:1].astype(np.float32)),
    }
    await admin.create_model(model_name)
    for flavor_name, model in models.items():
        data = artifact_of(model)
        version = await admin.create_version(metadata(model_name, data, artifact_format=flavor_name), data)
        assert version.artifact.format == flavor_name
    assert (await admin.get_model(model_name)).latest_version == 3
