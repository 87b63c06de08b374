"""Artifacts are verified before they are loaded: digest, trusted types, signatures."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from services.common.artifacts import (
    ArtifactError,
    DigestMismatch,
    dump_signed_pickle,
    dump_sklearn,
    load_signed_pickle,
    load_sklearn,
    sha256_hex,
)

KEY = b"k" * 32


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 4))
    return features, (features[:, 0] > 0).astype(int)


@pytest.mark.parametrize(
    "model",
    [make_pipeline(StandardScaler(), LogisticRegression()), HistGradientBoostingClassifier(max_iter=5)],
    ids=["logistic", "hist_gradient_boosting"],
)
def test_platform_models_round_trip(model: object, data: tuple[np.ndarray, np.ndarray]) -> None:
    features, labels = data
    model.fit(features, labels)  # type: ignore[attr-defined]
    blob = dump_sklearn(model)
    loaded = load_sklearn(blob, sha256_hex(blob))
    np.testing.assert_array_equal(loaded.predict(features), model.predict(features))  # type: ignore[attr-defined]


def test_a_changed_byte_is_refused_before_loading(data: tuple[np.ndarray, np.ndarray]) -> None:
    model = LogisticRegression().fit(*data)
    blob = dump_sklearn(model)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DigestMismatch) as caught:
        load_sklearn(tampered, sha256_hex(blob))
    assert caught.value.expected == sha256_hex(blob)


def test_types_outside_the_trusted_list_are_refused() -> None:
    # A skops file that would build an arbitrary object: refused even with a correct digest.
    blob = sio.dumps({"payload": sio.dumps})
    with pytest.raises(ArtifactError, match="outside the trusted list"):
        load_sklearn(blob, sha256_hex(blob))


def test_not_a_skops_file_is_refused() -> None:
    blob = b"definitely not a zip file"
    with pytest.raises(ArtifactError, match="not a skops artifact"):
        load_sklearn(blob, sha256_hex(blob))


def test_signed_pickles_load_only_with_the_right_key() -> None:
    blob, signature = dump_signed_pickle({"weights": [1.0, 2.0]}, KEY)
    assert load_signed_pickle(blob, sha256_hex(blob), signature, KEY) == {"weights": [1.0, 2.0]}
    with pytest.raises(ArtifactError, match="signature does not verify"):
        load_signed_pickle(blob, sha256_hex(blob), signature, b"o" * 32)
    with pytest.raises(ArtifactError, match="signature does not verify"):
        load_signed_pickle(blob, sha256_hex(blob), "", KEY)
