"""The monitor's own messages (``protos/mlops/v1/monitor.proto``) <-> its domain values.

Only the monitor writes its internal topics and its join table's changelog, and only after
the route stage checked what came in, so nothing is validated again here.

>>> from services.monitor.records import Label, Prediction
>>> p = Prediction("e1", "churn", 3, "production", False, "1", 0.0, 10.0, (0.5, float("nan")), ("a", "b"))
>>> back = prediction(prediction_message(p))
>>> (back.id, back.version, back.features)
('e1', 3, ())
>>> label(label_message(Label("e1", "1", None, None, 12.0)))
Label(id='e1', label='1', value=None, event_time=None, available_at=12.0)
"""

from __future__ import annotations

from services.common.proto.mlops.v1 import monitor_pb2
from services.monitor.join import JoinEntry, partition_of
from services.monitor.records import Label, LabelledSample, Prediction


def prediction_message(p: Prediction) -> monitor_pb2.MonitoredPrediction:
    """The prediction's answer without its inputs, as the join keeps it and passes it on with
    its label: only the route puts features on the join topic (as it checks a record)."""
    return monitor_pb2.MonitoredPrediction(
        id=p.id,
        model=p.model,
        version=p.version,
        route=p.route,
        shadow=p.shadow,
        label=p.label,
        value=p.value,
        occurred_at=p.occurred_at,
    )


def prediction(m: monitor_pb2.MonitoredPrediction, *, with_features: bool = True) -> Prediction:
    """The message's prediction; ``with_features=False`` leaves the inputs in the message
    (the join does not read them, and a tuple of each costs more than the join's own work)."""
    if not with_features:
        return Prediction(m.id, m.model, m.version, m.route, m.shadow, m.label, m.value, m.occurred_at)
    return Prediction(
        m.id,
        m.model,
        m.version,
        m.route,
        m.shadow,
        m.label,
        m.value,
        m.occurred_at,
        tuple(m.features),
        tuple(m.feature_names),
    )


def label_message(label: Label) -> monitor_pb2.MonitoredLabel:
    return monitor_pb2.MonitoredLabel(
        id=label.id,
        label=label.label,
        value=label.value,
        event_time=label.event_time,
        available_at=label.available_at,
    )


def label(m: monitor_pb2.MonitoredLabel) -> Label:
    return Label(
        m.id,
        m.label,
        m.value if m.HasField("value") else None,
        m.event_time if m.HasField("event_time") else None,
        m.available_at,
    )


def sample_message(sample: LabelledSample) -> monitor_pb2.JoinedSample:
    return monitor_pb2.JoinedSample(
        prediction=prediction_message(sample.prediction),
        label=label_message(sample.label),
    )


def sample(m: monitor_pb2.JoinedSample) -> LabelledSample:
    return LabelledSample(prediction(m.prediction), label(m.label))


def entry_message(entry: JoinEntry) -> monitor_pb2.JoinEntry:
    message = monitor_pb2.JoinEntry(
        expires_at=entry.expires_at,
        partition=entry.partition,
        predictions=[prediction_message(p) for p in entry.predictions],
    )
    if entry.label is not None:
        message.label.CopyFrom(label_message(entry.label))
    return message


def entry(m: monitor_pb2.JoinEntry) -> JoinEntry:
    return JoinEntry(
        expires_at=m.expires_at,
        partition=m.partition,
        predictions=tuple(prediction(p) for p in m.predictions),
        label=label(m.label) if m.HasField("label") else None,
    )


class Batches:
    """Items bound for the monitor's internal topics, grouped by the partition they belong
    to (the row id's on the join topic, the model name's on the samples topic): one message
    per partition and topic."""

    def __init__(self, partitions: int):
        self._partitions = partitions
        self.join: dict[int, monitor_pb2.JoinBatch] = {}
        self.samples: dict[int, monitor_pb2.SampleBatch] = {}

    def _join(self, row_id: str) -> monitor_pb2.JoinBatch:
        partition = partition_of(row_id, self._partitions)
        batch = self.join.get(partition)
        if batch is None:
            batch = self.join[partition] = monitor_pb2.JoinBatch()
        return batch

    def add_prediction(self, p: monitor_pb2.MonitoredPrediction) -> None:
        self._join(p.id).predictions.append(p)

    def add_label(self, label_: monitor_pb2.MonitoredLabel) -> None:
        self._join(label_.id).labels.append(label_)

    def add_sample(self, model: str) -> monitor_pb2.SampleItem:
        """A new item for the model's partition of the samples topic, to fill in."""
        partition = partition_of(model, self._partitions)
        batch = self.samples.get(partition)
        if batch is None:
            batch = self.samples[partition] = monitor_pb2.SampleBatch()
        return batch.items.add()

    def messages(self, join_topic: str, samples_topic: str) -> list[tuple[str, int, bytes]]:
        """(topic, partition, value) of every batch, and empty again."""
        out = [(join_topic, p, b.SerializeToString()) for p, b in self.join.items()]
        out += [(samples_topic, p, b.SerializeToString()) for p, b in self.samples.items()]
        self.join.clear()
        self.samples.clear()
        return out
