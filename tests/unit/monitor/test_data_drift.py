"""Data drift per input feature, prediction drift on the answers, and shadow comparison."""

from __future__ import annotations

import itertools
import random

from services.monitor.detectors import DetectorSpec
from services.monitor.drift import DATA, PREDICTION, Drift, DriftMonitor
from services.monitor.join import add_label, add_prediction
from services.monitor.policy import MonitorPolicy
from services.monitor.records import Label, Prediction
from services.monitor.retrain import RetrainRequest

NAMES = tuple(f"f{i}" for i in range(5))


def prediction(i: int, features: tuple[float, ...], label: str = "1", version: int = 1) -> Prediction:
    return Prediction(f"e{i}", "churn", version, "production", False, label, 0.0, float(i), features, NAMES)


def monitor(**policy: object) -> DriftMonitor:
    counter = itertools.count()
    return DriftMonitor(MonitorPolicy(**policy), new_id=lambda: f"id{next(counter)}")  # type: ignore[arg-type]


def test_a_mean_shift_in_one_feature_is_data_drift_on_that_feature_only() -> None:
    m = monitor()
    rng = random.Random(4)
    decisions = []
    for i in range(6000):
        features = tuple(rng.gauss(0, 1) for _ in NAMES)
        if i >= 3000:
            features = (features[0], features[1], features[2] + 1.0, features[3], features[4])
        decisions += m.observe(prediction(i, features), now=float(i))
    drifts = [d for d in decisions if isinstance(d, Drift)]
    assert drifts, "the shift was missed"
    assert {(d.kind, d.feature) for d in drifts} == {(DATA, "f2")}
    first = drifts[0]
    assert 3000 < first.change.sample_index < 3300
    assert first.change.statistic > first.change.reference_statistic + 0.5
    # Data drift alone does not retrain unless asked to.
    assert not any(isinstance(d, RetrainRequest) for d in decisions)
    status = m.status(now=0.0)[0]["versions"][0]["features"]
    assert status["f2"]["state"] == "drift" and status["f0"]["state"] == "stable"


def test_no_data_drift_on_a_stationary_stream_of_many_features() -> None:
    m = monitor()
    rng = random.Random(9)
    decisions = []
    for i in range(20_000):
        decisions += m.observe(prediction(i, tuple(rng.gauss(0, 1) for _ in NAMES)), now=float(i))
    assert decisions == []


def test_a_change_in_the_share_of_a_class_is_prediction_drift() -> None:
    m = monitor()
    rng = random.Random(2)
    decisions = []
    for i in range(6000):
        label = "1" if rng.random() < (0.2 if i < 3000 else 0.5) else "0"
        decisions += m.observe(prediction(i, (0.0,) * 5, label=label), now=float(i))
    drifts = [d for d in decisions if isinstance(d, Drift)]
    assert drifts and all(d.kind == PREDICTION for d in drifts)
    assert drifts[0].feature in ("label=1", "label=0")
    assert drifts[0].change.sample_index > 3000


def test_a_sampled_detector_sees_one_prediction_in_n() -> None:
    m = monitor(
        data_detector=DetectorSpec("KSWIN", {"seed": 1}), data_sample_every=10, prediction_detector=None
    )
    for i in range(1000):
        m.observe(prediction(i, (1.0,) * 5), now=float(i))
    quality = m.quality("churn", 1)
    assert quality is not None and quality.data is not None
    assert quality.data.detectors["f0"].samples == 100


def test_feature_detectors_are_capped() -> None:
    m = monitor(max_watched_features=3, prediction_detector=None)
    m.observe(prediction(0, (1.0, 2.0, 3.0, 4.0, 5.0)), now=0.0)
    quality = m.quality("churn", 1)
    assert quality is not None and quality.data is not None
    assert sorted(quality.data.detectors) == ["f0", "f1", "f2"]


def test_a_shadow_is_compared_with_the_live_version_on_the_same_requests() -> None:
    m = monitor()
    entry = None
    for i in range(10):
        live = Prediction(f"r{i}", "churn", 1, "production", False, "1", 0.0, 0.0)
        shadow = Prediction(f"r{i}", "churn", 2, "shadow", True, "0" if i < 4 else "1", 0.0, 0.0)
        entry = add_prediction(None, live, deadline=9.0, partition=0).entry
        entry = add_prediction(entry, shadow, deadline=9.0, partition=0).entry
        result = add_label(entry, Label(f"r{i}", "1", 1.0, None, 1.0), deadline=9.0, partition=0)
        assert len(result.compared) == 1
        for sample in result.joined:
            m.observe_labelled(sample, now=1.0)
        for pair in result.compared:
            m.compare(*pair)
    # The live version also answered requests the shadow never saw: not part of the comparison.
    for i in range(10, 20):
        live = Prediction(f"r{i}", "churn", 1, "production", False, "0", 0.0, 0.0)
        m.observe_labelled(
            add_label(
                add_prediction(None, live, deadline=9.0, partition=0).entry,
                Label(f"r{i}", "1", 1.0, None, 1.0),
                deadline=9.0,
                partition=0,
            ).joined[0],
            now=1.0,
        )
    [comparison] = m.shadow_comparison("churn")
    assert comparison == {"version": 2, "against": 1, "samples": 10, "accuracy": 0.6, "live_accuracy": 1.0}
    assert m.quality("churn", 1).accuracy == 0.5  # type: ignore[union-attr]


def test_a_shadow_arriving_after_the_label_is_compared_too() -> None:
    live = Prediction("r1", "churn", 1, "production", False, "1", 0.0, 0.0)
    shadow = Prediction("r1", "churn", 2, "shadow", True, "0", 0.0, 0.0)
    entry = add_prediction(None, live, deadline=9.0, partition=0).entry
    entry = add_label(entry, Label("r1", "1", 1.0, None, 1.0), deadline=9.0, partition=0).entry
    result = add_prediction(entry, shadow, deadline=9.0, partition=0)
    [(a, b)] = result.compared
    assert (a.prediction.version, b.prediction.version, a.error, b.error) == (1, 2, 0.0, 1.0)


def mixed_stream(seed: int) -> list[Prediction]:
    """Two models; a newer version arriving first as shadow, then live; missing values; a
    third class from halfway; a feature shift and a class-share shift; a set of feature
    names that changes once."""
    rng = random.Random(seed)
    out = []
    for i in range(8000):
        model = "churn" if rng.random() < 0.7 else "fraud"
        version = 2 if model == "churn" and i >= 5000 else 1
        shadow = model == "churn" and 4000 <= i < 5000 and rng.random() < 0.5
        if shadow:
            version = 2
        features = [rng.gauss(1.0 if i >= 3000 and model == "churn" else 0.0, 1.0)] + [
            rng.gauss(0, 1) for _ in NAMES[1:]
        ]
        if rng.random() < 0.05:
            features[rng.randrange(len(features))] = float("nan")
        names = NAMES if i < 6000 else (*NAMES[:4], "g4")
        classes = ("0", "1", "2") if i >= 4000 else ("0", "1")
        label = rng.choices(classes, weights=(0.6, 0.4 if i < 2000 else 0.2, 0.3)[: len(classes)])[0]
        out.append(
            Prediction(
                f"e{i}",
                model,
                version,
                "shadow" if shadow else "production",
                shadow,
                label,
                0.0,
                float(i),
                tuple(features),
                names,
            )
        )
    return out


def test_predictions_observed_in_batches_decide_what_one_at_a_time_decides() -> None:
    stream = mixed_stream(6)
    policy = {"retrain_on_data_drift": True, "retrain_min_samples": 1}
    singly, batched = monitor(**policy), monitor(**policy)
    one_at_a_time = [d for i, p in enumerate(stream) for d in singly.observe(p, now=float(i))]
    rng = random.Random(1)
    in_batches: list[Drift | RetrainRequest] = []
    start = 0
    while start < len(stream):
        size = rng.choice([1, 2, 50, 333, 700])
        # ``now`` is the batch's: the one-at-a-time run is given each one's own, so compare
        # what does not depend on it.
        in_batches += batched.observe_many(stream[start : start + size], now=float(start))
        start += size

    def per_model(decisions: list[Drift | RetrainRequest], model: str) -> list[tuple[object, ...]]:
        return [
            (d.kind, d.version, d.feature, d.change)
            if isinstance(d, Drift)
            else ("retrain", d.parent_version, d.onset_time)
            for d in decisions
            if d.model == model
        ]

    kinds = {d.kind for d in one_at_a_time if isinstance(d, Drift)}
    assert kinds == {DATA, PREDICTION} and any(isinstance(d, RetrainRequest) for d in one_at_a_time)
    for model in ("churn", "fraud"):
        assert per_model(in_batches, model) == per_model(one_at_a_time, model)
    assert batched.live_version("churn") == singly.live_version("churn") == 2
    for model, version in (("churn", 1), ("churn", 2), ("fraud", 1)):
        a, b = singly.quality(model, version), batched.quality(model, version)
        assert a is not None and b is not None
        assert (b.predictions, b.snapshot()["features"], b.snapshot()["outputs"]) == (
            a.predictions,
            a.snapshot()["features"],
            a.snapshot()["outputs"],
        )
