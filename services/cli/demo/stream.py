"""The demo's synthetic world: a binary classification stream with one abrupt concept drift.

Features are eight independent standard normals. Before the drift the label is
``1[w·x > 0]``; after it, the first four weights change sign, which makes the new
concept orthogonal to the old one: a model of the old concept falls to chance accuracy,
while a model retrained on the new one recovers. A small share of labels is flipped so
no model is perfect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FEATURES = tuple(f"f{i}" for i in range(8))


@dataclass
class Sample:
    index: int
    event_id: str
    features: np.ndarray
    label: int
    drifted: bool


@dataclass
class DriftingStream:
    """Samples in order; ``drift_at`` is the index of the first sample of the new concept.

    >>> stream = DriftingStream(run_id="r", drift_at=2, seed=1)
    >>> [s.drifted for s in stream.take(4)]
    [False, False, True, True]
    """

    run_id: str
    drift_at: int
    seed: int = 0
    label_noise: float = 0.03
    _rng: np.random.Generator = field(init=False, repr=False)
    _next: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._before = np.ones(len(FEATURES))
        self._after = self._before.copy()
        self._after[:4] *= -1

    def take(self, count: int) -> list[Sample]:
        features = self._rng.normal(size=(count, len(FEATURES)))
        noise = self._rng.random(count) < self.label_noise
        samples = []
        for row, flip in zip(features, noise, strict=True):
            index = self._next
            self._next += 1
            drifted = index >= self.drift_at
            weights = self._after if drifted else self._before
            label = int(row @ weights > 0) ^ int(flip)
            samples.append(Sample(index, f"{self.run_id}-{index}", row, label, drifted))
        return samples
