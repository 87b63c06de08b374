"""What the demo asks the platform for: the dataset its events go to, the spec of the model
it trains, and the events themselves."""

from __future__ import annotations

import json
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from services.cli.demo.stream import FEATURES, Sample
from services.common.proto.mlops.v1 import datasets_pb2, model_pb2

DATASET = "demo"


def demo_spec(model: str, run_started: datetime, family: str = "") -> model_pb2.ModelSpec:
    """What the platform trains as ``model``: a search over two families on this run's events
    (or ``family`` alone, with its default parameters), gated before promotion."""
    start = Timestamp()
    start.FromDatetime(run_started)
    spec = model_pb2.ModelSpec(
        model_name=model,
        dataset=DATASET,
        features=list(FEATURES),
        target="label",
        task=model_pb2.TASK_CLASSIFICATION,
        estimators=[
            model_pb2.EstimatorSpec(
                family="logistic_regression",
                search_space_json=json.dumps({"C": {"low": 0.01, "high": 100, "log": True}}),
            ),
            model_pb2.EstimatorSpec(
                family="hist_gradient_boosting",
                params_json=json.dumps({"max_iter": 60}),
                search_space_json=json.dumps(
                    {"learning_rate": {"low": 0.03, "high": 0.3, "log": True}, "max_leaf_nodes": [7, 15, 31]}
                ),
            ),
        ],
        metric="accuracy",
        time_budget_seconds=60,
        window=model_pb2.DataWindow(dataset=DATASET, start_time=start, max_rows=5000, min_rows=400),
        gates=model_pb2.Gates(
            min_metric=0.75, max_regression=0.02, max_noise_drop=0.05, max_missing_drop=0.4
        ),
        seed=7,
        holdout_fraction=0.25,
    )
    if family:
        del spec.estimators[:]
        spec.estimators.add(family=family)
    return spec


def demo_schema() -> datasets_pb2.DatasetSchema:
    """The dataset every run sends its events to (each run trains on its own, by time)."""
    number = datasets_pb2.FIELD_TYPE_NUMBER
    fields = [datasets_pb2.FieldSpec(name="event_id", type=datasets_pb2.FIELD_TYPE_TEXT, required=True)]
    fields.append(datasets_pb2.FieldSpec(name="entity_id", type=datasets_pb2.FIELD_TYPE_TEXT, required=True))
    fields.append(datasets_pb2.FieldSpec(name="ts", type=datasets_pb2.FIELD_TYPE_TIMESTAMP, required=True))
    fields += [
        datasets_pb2.FieldSpec(
            name=name, type=number, required=True, has_min=True, min=-20, has_max=True, max=20
        )
        for name in FEATURES
    ]
    fields.append(
        datasets_pb2.FieldSpec(
            name="label", type=number, required=False, has_min=True, min=0, has_max=True, max=1
        )
    )
    return datasets_pb2.DatasetSchema(
        name=DATASET,
        fields=fields,
        label_field="label",
        event_id_field="event_id",
        entity_id_field="entity_id",
        timestamp_field="ts",
        description="The demo's synthetic stream: eight standard normals and a binary label.",
    )


def raw_event(sample: Sample, event_time: datetime, with_label: bool = True) -> bytes:
    """The sample's event as plain JSON, as a producer outside the platform sends it."""
    event: dict[str, object] = {
        "dataset": DATASET,
        "event_id": sample.event_id,
        "entity_id": f"user-{sample.index % 97}",
        "ts": event_time.isoformat(),
    }
    event.update({name: float(value) for name, value in zip(FEATURES, sample.features, strict=True)})
    if with_label:
        event["label"] = sample.label
    return json.dumps(event).encode()
