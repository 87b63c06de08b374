"""How the monitor watches: which detectors, over what windows, and when to retrain."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.monitor.detectors import DetectorSpec


@dataclass(frozen=True)
class MonitorPolicy:
    detector: DetectorSpec = field(default_factory=DetectorSpec)
    """Concept drift: the detector on each version's error stream."""
    data_detector: DetectorSpec | None = field(default_factory=DetectorSpec)
    """Data drift: the detector on each input feature's values; None turns it off."""
    data_sample_every: int = 1
    """Feed the data detectors every n-th prediction (slow detectors such as KSWIN need n > 1)."""
    prediction_detector: DetectorSpec | None = field(default_factory=DetectorSpec)
    """Prediction drift: the detector on each class's share of the answers (or on the
    predicted value of a regressor); None turns it off."""
    max_watched_features: int = 100
    """Features (and classes) watched per version at most: a record cannot make the monitor
    create detectors without bound."""
    accuracy_window: int = 1000
    history: int = 10_000
    cooldown_seconds: float = 600.0
    retrain_min_samples: int = 500
    retrain_max_attempts: int = 3
    retrain_on_data_drift: bool = False
    """Also retrain when an input feature of the live version drifts (concept drift always does)."""
    training_reference: bool = True
    """Seed each version's data drift detectors with a sample of its training data."""
    reference_retry_seconds: float = 60.0
    """After the registry could not tell a version's training reference, ask again after this."""
