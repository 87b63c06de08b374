"""A version's reference profile is checked like every other field: finite, consistent,
bounded, and every refusal names the field to fix."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from services.common.proto.mlops.v1 import model_pb2
from services.registry import validation
from services.registry.errors import InvalidArgument

Profile = model_pb2.ReferenceProfile


def good() -> Profile:
    return Profile(
        row_count=100,
        seed=7,
        features=[
            model_pb2.FeatureProfile(
                name="f0",
                count=98,
                missing=2,
                mean=0.5,
                std=0.2,
                min=0.0,
                max=1.0,
                quantiles=[
                    model_pb2.Quantile(level=0.05, value=0.1),
                    model_pb2.Quantile(level=0.5, value=0.5),
                ],
                sample=[0.1, 0.9, 0.5],
            )
        ],
    )


def test_a_good_profile_passes() -> None:
    validation.reference_profile(good(), ["f0", "f1"])


def change(edit: Callable[[Profile], object]) -> Profile:
    profile = good()
    edit(profile)
    return profile


F = "metadata.reference_profile"
BAD = [
    (lambda p: setattr(p, "row_count", -1), f"{F}.row_count"),
    (lambda p: setattr(p.features[0], "name", ""), f"{F}.features[0].name"),
    (lambda p: setattr(p.features[0], "name", "bad\x00name"), f"{F}.features[0].name"),
    (lambda p: setattr(p.features[0], "count", -1), f"{F}.features[0].count"),
    (lambda p: setattr(p.features[0], "missing", -3), f"{F}.features[0].missing"),
    (lambda p: setattr(p.features[0], "mean", math.nan), f"{F}.features[0].mean"),
    (lambda p: setattr(p.features[0], "std", math.inf), f"{F}.features[0].std"),
    (lambda p: setattr(p.features[0], "std", -0.1), f"{F}.features[0].std"),
    (lambda p: setattr(p.features[0], "max", -math.inf), f"{F}.features[0].max"),
    (lambda p: setattr(p.features[0], "min", 2.0), f"{F}.features[0].min"),
    (lambda p: setattr(p.features[0].quantiles[0], "level", 1.5), f"{F}.features[0].quantiles[0].level"),
    (lambda p: setattr(p.features[0].quantiles[0], "value", math.nan), f"{F}.features[0].quantiles[0].value"),
    (lambda p: setattr(p.features[0].quantiles[1], "level", 0.01), f"{F}.features[0].quantiles[1]"),
    (lambda p: setattr(p.features[0].quantiles[1], "value", 0.05), f"{F}.features[0].quantiles[1]"),
    (lambda p: setattr(p.features[0].quantiles[1], "value", 3.0), f"{F}.features[0].quantiles[1].value"),
    (lambda p: p.features[0].sample.append(math.nan), f"{F}.features[0].sample[3]"),
    (lambda p: p.features[0].sample.append(-math.inf), f"{F}.features[0].sample[3]"),
    (lambda p: p.features[0].sample.append(5.0), f"{F}.features[0].sample"),
    (lambda p: p.features[0].sample.extend([0.5] * validation.MAX_PROFILE_SAMPLE), f"{F}.features[0].sample"),
    (lambda p: setattr(p.features[0], "count", 2), f"{F}.features[0].sample"),
    (lambda p: setattr(p.features[0], "count", 99), f"{F}.features[0].count"),
    (lambda p: p.features.append(p.features[0]), f"{F}.features[1].name"),
    (lambda p: setattr(p.features[0], "name", "unknown"), f"{F}.features[0].name"),
    (
        lambda p: p.features[0].quantiles.extend(
            [model_pb2.Quantile(level=0.9, value=0.9)] * validation.MAX_QUANTILES
        ),
        f"{F}.features[0].quantiles",
    ),
]


@pytest.mark.parametrize(("edit", "field"), BAD)
def test_bad_profiles_are_refused_naming_the_field(edit: Callable[[Profile], object], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validation.reference_profile(change(edit), ["f0", "f1"])
    assert caught.value.field == field, str(caught.value)


def test_the_samples_of_all_features_together_are_bounded() -> None:
    per_feature = validation.MAX_PROFILE_SAMPLE
    n = validation.MAX_PROFILE_SAMPLE_VALUES // per_feature + 1
    profile = Profile(row_count=per_feature)
    for i in range(n):
        profile.features.add(name=f"f{i}", count=per_feature, min=0.0, max=1.0, sample=[0.5] * per_feature)
    with pytest.raises(InvalidArgument) as caught:
        validation.reference_profile(profile)
    assert caught.value.field == f"{F}.features"
    del profile.features[-1]
    validation.reference_profile(profile)


def test_without_feature_names_in_the_signature_any_name_is_accepted() -> None:
    validation.reference_profile(change(lambda p: setattr(p.features[0], "name", "other")))
