"""The river-hmac flavor: a signed pickle is unpickled only after its HMAC verifies."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from river import compose, linear_model, preprocessing, stats

from services.common.artifacts import ArtifactError, SignatureMismatch, sha256_hex, sign
from services.common.flavors import flavor
from services.common.flavors.base import SIGNATURE_HMAC_PARAM, StoredArtifact
from services.common.flavors.river import FEATURE_KINDS_PARAM, RiverRuntime
from services.common.proto.mlops.v1 import model_pb2

KEY = b"k" * 32
RIVER = flavor("river-hmac")


class Planted:
    """A pickle that runs code when loaded: what a forged artifact would carry."""

    ran: list[str] = []

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Planted.ran.append, ("unpickled",))


def stored(data: bytes, signature_hmac: str) -> StoredArtifact:
    return StoredArtifact(
        data,
        sha256_hex(data),
        model_pb2.Signature(feature_names=["x", "colour"], task=model_pb2.TASK_REGRESSION),
        {SIGNATURE_HMAC_PARAM: signature_hmac, FEATURE_KINDS_PARAM: json.dumps({"colour": "categorical"})},
    )


def test_a_signed_model_round_trips_and_reads_rows_by_feature_kind() -> None:
    numbers = compose.Select("x") | preprocessing.StatImputer(("x", stats.Mean()))
    categories = compose.Select("colour") | preprocessing.OneHotEncoder()
    model = compose.TransformerUnion(numbers, categories) | linear_model.LinearRegression()
    for x, colour, y in [(1.0, "red", 3.0), (2.0, "blue", 4.0)] * 50:
        model.learn_one({"x": x, "colour": colour}, y)
    saved = RIVER.save(model, signing_key=KEY)
    RIVER.verify(saved.data, signature_hmac=saved.signature_hmac, signing_key=KEY)
    runtime = RIVER.load(stored(saved.data, saved.signature_hmac), signing_key=KEY)
    assert isinstance(runtime, RiverRuntime) and runtime.categorical == {"colour"}
    matrix = np.array([[1.0, "red"], [np.nan, None]], dtype=object)
    expected = [
        model.predict_one({"x": 1.0, "colour": "red"}),
        model.predict_one({"x": None, "colour": "__missing__"}),
    ]
    np.testing.assert_allclose(runtime.predict(matrix), expected)


@pytest.mark.parametrize(
    ("signature_hmac", "key", "reason"),
    [
        (sign(pickle.dumps(Planted()), b"o" * 32), KEY, "does not verify"),
        ("", KEY, "no '" + SIGNATURE_HMAC_PARAM + "' parameter"),
        (sign(pickle.dumps(Planted()), KEY), None, "none is set here"),
    ],
    ids=["wrong_key", "unsigned", "no_key"],
)
def test_nothing_is_unpickled_unless_its_hmac_verifies(
    signature_hmac: str, key: bytes | None, reason: str
) -> None:
    data = pickle.dumps(Planted())
    with pytest.raises(ArtifactError, match=reason):
        RIVER.load(stored(data, signature_hmac), signing_key=key)
    with pytest.raises(SignatureMismatch):
        RIVER.verify(data, signature_hmac=signature_hmac, signing_key=key)
    assert Planted.ran == []


def test_saving_needs_the_key_and_the_signature_infers_nothing() -> None:
    with pytest.raises(ArtifactError, match="MLOPS_ARTIFACT_SIGNING_KEY"):
        RIVER.save(linear_model.LinearRegression())
    inferred = RIVER.infer_signature(pickle.dumps(Planted()))
    assert inferred.task == model_pb2.TASK_UNSPECIFIED and inferred.unknown
    assert Planted.ran == []
