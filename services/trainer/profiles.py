"""A version's reference profile: what its training data looked like, feature by feature.
No I/O.

The monitor measures data drift against it: each numeric feature's summary (count, mean,
standard deviation, range, quantiles) for people and dashboards, and a fixed-size sample
that seeds the monitor's detectors, so live values are compared with the data the model
was fitted on rather than only with earlier live values.
"""

from __future__ import annotations

import zlib

import numpy as np

from services.common.proto.mlops.v1.model_pb2 import FeatureProfile, Quantile, ReferenceProfile
from services.trainer.tabular import FeatureKind, Table

QUANTILE_LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SAMPLE_SIZE = 256
"""Sample values kept per feature. ADWIN, seeded with 256 reference values, tells a 1 sd
shift within a few dozen live values and a 0.5 sd one within a few hundred."""
MAX_SAMPLE_VALUES = 100_000
"""The registry's limit on sample values in one profile: wide tables get smaller samples."""


def feature_profile(
    name: str, column: np.ndarray, rng: np.random.Generator, sample_size: int
) -> FeatureProfile:
    """The profile of one column (missing and non-finite cells counted, not summarised).

    >>> rng = np.random.default_rng(0)
    >>> profile = feature_profile("x", np.array([1.0, 2.0, np.nan, 3.0]), rng, sample_size=2)
    >>> profile.count, profile.missing, profile.mean, profile.min, profile.max, len(profile.sample)
    (3, 1, 2.0, 1.0, 3.0, 2)
    """
    values = column[np.isfinite(column)]
    profile = FeatureProfile(name=name, count=len(values), missing=len(column) - len(values))
    if not len(values):
        return profile
    profile.mean = float(values.mean())
    profile.std = float(values.std())
    profile.min = float(values.min())
    profile.max = float(values.max())
    quantiles = np.quantile(values, QUANTILE_LEVELS)
    # Rounding can put the mean a hair outside [min, max] or a quantile below the previous one.
    profile.mean = min(max(profile.mean, profile.min), profile.max)
    levels = [float(q) for q in np.maximum.accumulate(np.clip(quantiles, profile.min, profile.max))]
    profile.quantiles.extend(
        Quantile(level=lvl, value=v) for lvl, v in zip(QUANTILE_LEVELS, levels, strict=True)
    )
    profile.sample.extend(
        float(v) for v in rng.choice(values, size=min(sample_size, len(values)), replace=False)
    )
    return profile


def reference_profile(table: Table, seed: int, sample_size: int = SAMPLE_SIZE) -> ReferenceProfile:
    """The profile of every numeric feature of ``table``, in its feature order.

    Each feature's sample is drawn with its own generator, seeded by ``seed`` and the
    feature's name, so the same rows and seed give the same samples whatever other
    features the table has.
    """
    numeric = [(i, f.name) for i, f in enumerate(table.features) if f.kind is FeatureKind.NUMERIC]
    per_feature = min(sample_size, MAX_SAMPLE_VALUES // max(1, len(numeric)))
    profile = ReferenceProfile(row_count=len(table), seed=seed)
    for index, name in numeric:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        column = np.asarray(table.X[:, index], dtype=np.float64)
        profile.features.append(feature_profile(name, column, rng, per_feature))
    return profile
