"""Online (river) models, as the trainer registers them, served over gRPC; a version whose
signature does not verify is refused while the current one keeps answering."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from services.common.artifacts import sign
from services.common.flavors.base import SIGNATURE_HMAC_PARAM
from services.common.proto.inference import grpc_service_pb2 as oip
from services.serving.models import ServedModel
from tests.integration.serving.conftest import Stack, output
from tests.integration.serving.trained import Trained, columns_request, train


@pytest.fixture(scope="module")
def online() -> Trained:
    return train("river_logistic_regression")


@pytest.fixture(scope="module")
def other_online() -> Trained:
    return train("river_logistic_regression", rows=200)


async def test_a_river_model_is_served_and_a_version_that_does_not_verify_is_refused(
    stack: Stack, model_name: str, online: Trained, other_online: Trained
) -> None:
    await stack.admin.create_model(model_name)
    await stack.admin.create_version(online.described_as(model_name), online.artifact)
    await stack.served(model_name, production=1)
    X = online.X
    expected = online.estimator.predict_proba(X)

    response = await stack.infer(columns_request(model_name, X))
    assert response.model_version == "1"
    np.testing.assert_allclose(output(response, "probabilities"), expected)
    assert output(response, "label").tolist() == online.estimator.predict(X).tolist()
    metadata = await stack.stub.ModelMetadata(
        oip.ModelMetadataRequest(name=model_name), metadata=stack.metadata()
    )
    assert metadata.platform == "river"
    assert [t.name for t in metadata.outputs] == ["probabilities", "label"]

    # Version 2's artifact is genuine (the registry checked its HMAC on upload), but the
    # signature serving is given to check it with is someone else's: refused, not unpickled.
    forged = other_online.described_as(model_name)
    forged.params[SIGNATURE_HMAC_PARAM] = sign(other_online.artifact, b"another key" * 4)
    await stack.admin.create_version(forged, other_online.artifact)
    assert stack.serving.manager is not None

    def refused(models: Mapping[str, ServedModel]) -> bool:
        return "version 2 (production) cannot be served" in models[model_name].reason

    await stack.serving.manager.wait_for(refused, within=20)
    reason = stack.serving.manager.models[model_name].reason
    assert "the artifact's HMAC does not verify under the platform's signing key" in reason
    response = await stack.infer(columns_request(model_name, X))
    assert response.model_version == "1"
    np.testing.assert_allclose(output(response, "probabilities"), expected)
