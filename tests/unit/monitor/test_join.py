"""The join: labels before or after predictions, duplicates recognised, expiry accounted."""

from __future__ import annotations

import math

from services.common.proto.mlops.v1 import monitor_pb2
from services.monitor import internal
from services.monitor.join import ExpiryQueue, add_label, add_prediction, partition_of
from services.monitor.records import Label, Prediction


def pred(
    id: str = "e1", version: int = 1, route: str = "production", shadow: bool = False, label: str = "1"
) -> Prediction:
    return Prediction(id, "m", version, route, shadow, label, 0.0, 100.0, features=(1.0, 2.0))


def lab(id: str = "e1", label: str = "1") -> Label:
    return Label(id, label, float(label), 90.0, 150.0)


def test_a_label_after_its_prediction_joins_once() -> None:
    first = add_prediction(None, pred(), deadline=500.0, partition=2)
    assert first.joined == () and not first.duplicate
    second = add_label(first.entry, lab(), deadline=600.0, partition=2)
    assert [s.prediction.id for s in second.joined] == ["e1"]
    assert second.joined[0].error == 0.0
    # The entry keeps its first deadline; the stored prediction has no features.
    assert second.entry.expires_at == 500.0
    assert second.entry.predictions[0].features == ()
    assert add_label(second.entry, lab(), deadline=700.0, partition=2).duplicate


def test_a_label_before_its_prediction_joins_when_it_comes() -> None:
    first = add_label(None, lab(label="0"), deadline=500.0, partition=0)
    assert first.joined == ()
    second = add_prediction(first.entry, pred(), deadline=600.0, partition=0)
    assert len(second.joined) == 1
    assert second.joined[0].error == 1.0
    # The joined sample carries the features of the prediction as it arrived.
    assert second.joined[0].prediction.features == (1.0, 2.0)
    assert second.joined[0].label_lag == 50.0


def test_the_same_prediction_twice_is_a_duplicate_but_a_shadow_answer_is_not() -> None:
    entry = add_label(None, lab(), deadline=500.0, partition=0).entry
    first = add_prediction(entry, pred(), deadline=500.0, partition=0)
    again = add_prediction(first.entry, pred(), deadline=500.0, partition=0)
    assert again.duplicate and again.joined == ()
    shadow = add_prediction(
        first.entry, pred(version=2, route="shadow", shadow=True, label="0"), deadline=500.0, partition=0
    )
    assert not shadow.duplicate
    assert [(s.prediction.version, s.error) for s in shadow.joined] == [(2, 1.0)]


def test_a_label_joins_every_prediction_already_there() -> None:
    entry = add_prediction(None, pred(), deadline=500.0, partition=0).entry
    entry = add_prediction(
        entry, pred(version=2, route="shadow", shadow=True), deadline=500.0, partition=0
    ).entry
    joined = add_label(entry, lab(), deadline=500.0, partition=0).joined
    assert sorted(s.prediction.version for s in joined) == [1, 2]


def test_what_never_met_its_other_half_is_counted_at_expiry() -> None:
    lonely_prediction = add_prediction(None, pred(), deadline=1.0, partition=0).entry
    lonely_label = add_label(None, lab(), deadline=1.0, partition=0).entry
    joined = add_label(lonely_prediction, lab(), deadline=1.0, partition=0).entry
    assert (lonely_prediction.unmatched_predictions, lonely_prediction.unmatched_label) == (1, False)
    assert (lonely_label.unmatched_predictions, lonely_label.unmatched_label) == (0, True)
    assert (joined.unmatched_predictions, joined.unmatched_label) == (0, False)


def test_entries_survive_their_changelog_round_trip() -> None:
    entry = add_prediction(None, pred(), deadline=5.0, partition=3).entry
    entry = add_label(entry, lab(), deadline=5.0, partition=3).entry
    wire = internal.entry_message(entry).SerializeToString()
    assert internal.entry(monitor_pb2.JoinEntry.FromString(wire)) == entry
    unlabelled = add_prediction(None, pred(), deadline=5.0, partition=0).entry
    assert internal.entry(internal.entry_message(unlabelled)).label is None


def test_predictions_cross_the_internal_topics_with_every_feature_value_exact() -> None:
    # A missing value (NaN) is a valid feature: the detectors skip it, the topic must carry it.
    values = (0.1, -1.4368294451025299, 1e-300, math.nan, math.inf)
    prediction = Prediction("e1", "m", 1, "production", False, "1", 0.0, 100.0, values, tuple("abcde"))
    batches = internal.Batches(4)
    batches.add_prediction(
        monitor_pb2.MonitoredPrediction(
            id="e1",
            model="m",
            version=1,
            route="production",
            label="1",
            occurred_at=100.0,
            features=values,
            feature_names=prediction.feature_names,
        )
    )
    [(topic, partition, value)] = batches.messages("join", "samples")
    assert (topic, partition) == ("join", partition_of("e1", 4))
    back = internal.prediction(monitor_pb2.JoinBatch.FromString(value).predictions[0])
    assert back.features[:3] == values[:3] and math.isnan(back.features[3]) and back.features[4] == math.inf
    assert back.feature_names == prediction.feature_names
    assert back == Prediction(
        "e1", "m", 1, "production", False, "1", 0.0, 100.0, back.features, prediction.feature_names
    )


def test_a_label_without_a_value_or_event_time_stays_without_them() -> None:
    for label in (lab(), Label("e1", "yes", None, None, 3.0), Label("e1", "0", 0.0, 0.0, 3.0)):
        assert (
            internal.label(
                monitor_pb2.MonitoredLabel.FromString(internal.label_message(label).SerializeToString())
            )
            == label
        )


def test_expiry_pops_only_what_is_due_in_that_partition() -> None:
    queue = ExpiryQueue()
    queue.add(0, 10.0, "a")
    queue.add(0, 5.0, "b")
    queue.add(1, 1.0, "c")
    assert queue.pop_due(0, now=4.0) == []
    assert queue.pop_due(0, now=10.0) == ["b", "a"]
    queue.forget(1)
    assert len(queue) == 0


def test_partitioning_is_stable_and_spreads_keys() -> None:
    assert partition_of("request-42", 8) == partition_of("request-42", 8)
    assert len({partition_of(f"r{i}", 8) for i in range(200)}) == 8
