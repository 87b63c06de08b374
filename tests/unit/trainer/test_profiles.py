"""The reference profile a version is registered with: what its training rows looked like
per numeric feature, reproducible, and within what the registry accepts."""

from __future__ import annotations

import numpy as np
import pytest

from services.registry import validation
from services.trainer import profiles
from services.trainer.profiles import MAX_SAMPLE_VALUES, SAMPLE_SIZE, reference_profile
from services.trainer.tabular import Feature, FeatureKind, Table
from tests.unit.trainer import synthetic


def table(columns: dict[str, np.ndarray], categorical: tuple[str, ...] = ()) -> Table:
    names = list(columns)
    n = len(next(iter(columns.values())))
    features = tuple(
        Feature(name, FeatureKind.CATEGORICAL if name in categorical else FeatureKind.NUMERIC)
        for name in names
    )
    X = np.empty((n, len(names)), dtype=object if categorical else np.float64)
    for i, name in enumerate(names):
        X[:, i] = columns[name]
    return Table(features, X, np.zeros(n), tuple(f"e{i}" for i in range(n)))


def test_each_numeric_feature_is_summarised_with_a_sample_of_its_values() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 2.0, 2000)
    x[:10] = np.nan
    colour = np.array(["red", "blue"] * 1000, dtype=object)
    profile = reference_profile(table({"x": x, "colour": colour, "y": rng.random(2000)}, ("colour",)), seed=3)

    assert [f.name for f in profile.features] == ["x", "y"]
    assert profile.row_count == 2000 and profile.seed == 3
    px = profile.features[0]
    finite = x[np.isfinite(x)]
    assert (px.count, px.missing) == (1990, 10)
    assert px.mean == pytest.approx(finite.mean()) and px.std == pytest.approx(finite.std())
    assert (px.min, px.max) == (finite.min(), finite.max())
    assert [q.level for q in px.quantiles] == list(profiles.QUANTILE_LEVELS)
    assert px.quantiles[3].value == pytest.approx(np.median(finite))
    assert len(px.sample) == SAMPLE_SIZE and set(px.sample) <= set(finite)
    assert len(set(px.sample)) == SAMPLE_SIZE, "drawn without replacement"
    # A fair sample of the column: its mean within a few standard errors of the column's.
    assert abs(np.mean(px.sample) - finite.mean()) < 4 * finite.std() / np.sqrt(SAMPLE_SIZE)
    validation.reference_profile(profile, ["x", "colour", "y"])


def test_samples_are_reproducible_per_feature_whatever_else_the_table_holds() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=1000), rng.normal(size=1000)
    alone = reference_profile(table({"x": x}), seed=9).features[0]
    with_other = reference_profile(table({"y": y, "x": x}), seed=9).features[1]
    other_seed = reference_profile(table({"x": x}), seed=10).features[0]
    assert list(alone.sample) == list(with_other.sample)
    assert list(alone.sample) != list(other_seed.sample)


def test_a_feature_with_no_values_has_counts_and_no_sample() -> None:
    profile = reference_profile(table({"x": np.full(50, np.nan)}), seed=0)
    feature = profile.features[0]
    assert (feature.count, feature.missing, len(feature.sample), len(feature.quantiles)) == (0, 50, 0, 0)
    validation.reference_profile(profile)


def test_a_constant_feature_stays_within_its_own_range() -> None:
    profile = reference_profile(table({"x": np.full(300, 0.1)}), seed=0)
    validation.reference_profile(profile)
    assert profile.features[0].std == pytest.approx(0.0, abs=1e-12)


def test_wide_tables_get_smaller_samples_within_the_registrys_limit() -> None:
    rng = np.random.default_rng(3)
    columns = {f"f{i}": rng.normal(size=300) for i in range(1000)}
    profile = reference_profile(table(columns), seed=0)
    total = sum(len(f.sample) for f in profile.features)
    assert len(profile.features) == 1000
    assert total <= MAX_SAMPLE_VALUES and len(profile.features[0].sample) == MAX_SAMPLE_VALUES // 1000
    validation.reference_profile(profile)


def test_a_trained_version_carries_the_profile_of_the_rows_it_was_fitted_on() -> None:
    spec = synthetic.spec()
    _, candidate, described, _ = synthetic.trained(spec)
    profile = described.reference_profile
    # f0, f1 and the boolean flag are numbers to the model; the colour is a category.
    assert [f.name for f in profile.features] == ["f0", "f1", "flag"]
    assert profile.row_count == candidate.train_rows == 300
    assert all(f.count == 300 for f in profile.features)
    assert profile.seed == spec.seed
    validation.version_metadata(described, max_artifact_bytes=1 << 30)
