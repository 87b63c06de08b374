"""Synthetic datasets for the trainer's tests: a schema and rows as ingest stores them.

The label depends on two numbers and one category, with label noise, so a good model
scores well but not perfectly, and a model that ignores the category scores worse.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, FieldSpec, FieldType
from services.common.proto.mlops.v1.events_pb2 import FeatureRow, TrainRequest
from services.common.proto.mlops.v1.model_pb2 import (
    DataWindow,
    EstimatorSpec,
    Gates,
    MaterializedWindow,
    ModelSpec,
    Task,
)
from services.common.proto.mlops.v1.registry_pb2 import VersionMetadata
from services.common.values import to_feature_value
from services.trainer.plan import TrainingPlan, make_plan
from services.trainer.registration import version_metadata
from services.trainer.tabular import Feature, FeatureKind
from services.trainer.training import TrainedCandidate, Trainer

START = datetime(2026, 11, 1, tzinfo=UTC)
COLORS = ("red", "green", "blue")
FEATURES = (
    Feature("f0", FeatureKind.NUMERIC),
    Feature("f1", FeatureKind.NUMERIC),
    Feature("color", FeatureKind.CATEGORICAL),
    Feature("flag", FeatureKind.NUMERIC),
)
"""The model features of :func:`rows`, as the trainer lays them out (a boolean is a number)."""


def schema(name: str = "credit", version: int = 1) -> DatasetSchema:
    return DatasetSchema(
        name=name,
        version=version,
        fields=[
            FieldSpec(name="event_id", type=FieldType.FIELD_TYPE_TEXT, required=True),
            FieldSpec(name="entity_id", type=FieldType.FIELD_TYPE_TEXT, required=True),
            FieldSpec(name="ts", type=FieldType.FIELD_TYPE_TIMESTAMP, required=True),
            FieldSpec(name="f0", type=FieldType.FIELD_TYPE_NUMBER),
            FieldSpec(name="f1", type=FieldType.FIELD_TYPE_NUMBER),
            FieldSpec(name="color", type=FieldType.FIELD_TYPE_CATEGORY, allowed_values=list(COLORS)),
            FieldSpec(name="flag", type=FieldType.FIELD_TYPE_BOOLEAN),
            FieldSpec(name="note", type=FieldType.FIELD_TYPE_TEXT),
            FieldSpec(name="label", type=FieldType.FIELD_TYPE_NUMBER),
        ],
        label_field="label",
        event_id_field="event_id",
        entity_id_field="entity_id",
        timestamp_field="ts",
    )


def events(
    n: int, seed: int = 0, *, flip: bool = False, noise: float = 0.3, first_minute: int = 0
) -> list[dict[str, object]]:
    """``n`` raw events one minute apart from ``first_minute``; ``flip`` inverts the concept (drift)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        f0, f1 = float(rng.normal()), float(rng.normal())
        color = COLORS[int(rng.integers(3))]
        score = f0 + 0.5 * f1 + (1.2 if color == "red" else -0.4) + float(rng.normal(0, noise))
        label = int(score > 0) ^ int(flip)
        out.append(
            {
                "event_id": f"e{seed}-{i}",
                "entity_id": f"u{i % 17}",
                "ts": (START + timedelta(minutes=first_minute + i)).isoformat().replace("+00:00", "Z"),
                "f0": round(f0, 6),
                "f1": round(f1, 6),
                "color": color,
                "flag": bool(i % 2),
                "label": label,
            }
        )
    return out


def rows(
    n: int, seed: int = 0, *, flip: bool = False, noise: float = 0.3, dataset: str = "credit"
) -> list[FeatureRow]:
    """The rows ingest would store for :func:`events`."""
    out = []
    for event in events(n, seed, flip=flip, noise=noise):
        stamp = Timestamp()
        stamp.FromDatetime(datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")))
        row = FeatureRow(
            event_id=str(event["event_id"]),
            entity_id=str(event["entity_id"]),
            dataset=dataset,
            schema_version=1,
            event_time=stamp,
            label=to_feature_value(event["label"]),  # type: ignore[arg-type]
        )
        for name in ("f0", "f1", "color", "flag"):
            row.features[name].CopyFrom(to_feature_value(event[name]))  # type: ignore[arg-type]
        out.append(row)
    return out


def spec(
    name: str = "credit-model",
    *,
    families: tuple[str, ...] = ("logistic_regression",),
    params: str = "",
    search_space: str = "",
    gates: Gates | None = None,
    metric: str = "accuracy",
    budget: float = 60.0,
    features: tuple[str, ...] = ("f0", "f1", "color", "flag"),
    dataset: str = "credit",
    seed: int = 7,
) -> ModelSpec:
    return ModelSpec(
        model_name=name,
        dataset=dataset,
        features=list(features),
        target="label",
        task=Task.TASK_CLASSIFICATION,
        estimators=[
            EstimatorSpec(family=f, params_json=params, search_space_json=search_space) for f in families
        ],
        metric=metric,
        time_budget_seconds=budget,
        gates=gates or Gates(),
        seed=seed,
        holdout_fraction=0.25,
    )


def trained(
    spec: ModelSpec, n_rows: int = 400
) -> tuple[TrainingPlan, TrainedCandidate, VersionMetadata, bytes]:
    """``spec`` trained on :func:`rows` and described for the registry: the plan, the
    candidate, its version metadata and its artifact."""
    plan = make_plan(spec, schema())
    candidate = Trainer(plan, rows(n_rows)).run()
    described, artifact = version_metadata(
        plan=plan,
        spec=spec,
        request=TrainRequest(request_id="r-1", model_name=spec.model_name),
        candidate=candidate,
        window=MaterializedWindow(
            window=DataWindow(dataset="credit"), content_sha256="ab" * 32, row_count=n_rows
        ),
        code_version="test",
        parent_version=0,
    )
    return plan, candidate, described, artifact
