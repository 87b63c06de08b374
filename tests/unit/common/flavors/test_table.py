"""The flavor table: every format by name, the flavor that saves a model, and the registry's
one verification call refusing, with the platform's error, anything a flavor would not load."""

from __future__ import annotations

import doctest
import importlib
import pickle

import lightgbm
import numpy as np
import pytest
import xgboost
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from services.common.errors import InvalidArgument, Kind
from services.common.flavors import FLAVORS, UnknownFlavor, flavor, flavor_of, verify_upload
from services.common.flavors.river import RiverRuntime
from services.common.proto.mlops.v1 import model_pb2
from tests.unit.common.flavors.conftest import Data


def test_the_table_names_each_flavor_by_the_format_string_versions_store() -> None:
    assert list(FLAVORS) == ["skops", "river-hmac", "xgboost", "lightgbm", "onnx"]
    assert all(flavor(name).name == name for name in FLAVORS)
    assert [name for name in FLAVORS if flavor(name).signed] == ["river-hmac"]
    with pytest.raises(
        UnknownFlavor, match="unknown artifact format 'pmml'; the flavors are skops, river-hmac"
    ):
        flavor("pmml")


def test_each_model_object_finds_the_flavor_that_saves_it(binary: Data) -> None:
    logistic = LogisticRegression().fit(binary.X, binary.y)
    models = {
        "skops": logistic,
        "xgboost": xgboost.XGBClassifier(n_estimators=2).fit(binary.X, binary.y),
        "lightgbm": lightgbm.LGBMClassifier(n_estimators=2, verbose=-1).fit(binary.X, binary.y),
        "onnx": to_onnx(logistic, binary.X[:1].astype(np.float32)),
        "river-hmac": RiverRuntime(object(), ["x"], (), model_pb2.TASK_REGRESSION),
    }
    assert {name: flavor_of(model).name for name, model in models.items()} == {name: name for name in models}
    with pytest.raises(UnknownFlavor, match="no flavor saves a builtins.dict"):
        flavor_of({})


@pytest.mark.parametrize("name", ["skops", "xgboost", "lightgbm", "onnx"])
def test_a_pickle_posing_as_any_flavor_is_invalid_argument_naming_the_problem(
    name: str, binary: Data
) -> None:
    data = pickle.dumps(LogisticRegression().fit(binary.X, binary.y))
    with pytest.raises(InvalidArgument) as caught:
        verify_upload(name, data)
    assert caught.value.kind is Kind.INVALID and caught.value.field == "metadata.artifact"
    assert (
        f"metadata.artifact: {name} artifact refused: the bytes are a Python pickle" in caught.value.message
    )


def test_a_signature_that_does_not_verify_names_the_signature_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        verify_upload("river-hmac", b"\x80\x05N.", signature_hmac="0" * 64, signing_key=b"k" * 32)
    assert caught.value.field == "metadata.signature_hmac"
    assert "does not verify" in caught.value.message


@pytest.mark.parametrize(
    "module",
    [
        "services.common.flavors",
        "services.common.flavors.base",
        "services.common.flavors.explain",
        "services.common.flavors.river",
        "services.common.flavors.signature",
    ],
)
def test_the_examples_in_the_docstrings_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
