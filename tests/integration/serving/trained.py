"""Models trained and described by the trainer's own code, for serving to serve.

The trainer's synthetic dataset has numbers and a text category (f0, f1, color, flag), so
requests exercise one tensor per feature with the category as BYTES, the way clients
send categories to the trainer's pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.common.proto.mlops.v1.events_pb2 import TrainRequest
from services.serving.tensors import encode_bytes_elements
from services.trainer.plan import make_plan
from services.trainer.registration import version_metadata
from services.trainer.tabular import feature_matrix
from services.trainer.training import Trainer
from tests.integration.serving.conftest import SIGNING_KEY
from tests.unit.trainer import synthetic

FEATURE_NAMES = ("f0", "f1", "color", "flag")


@dataclass(frozen=True)
class Trained:
    """A model as the trainer registers it, and fresh rows (the trainer's feature matrix)."""

    estimator: Any
    metadata: registry_pb2.VersionMetadata
    artifact: bytes
    X: np.ndarray

    def described_as(self, name: str) -> registry_pb2.VersionMetadata:
        metadata = registry_pb2.VersionMetadata()
        metadata.CopyFrom(self.metadata)
        metadata.model_name = metadata.spec.model_name = name
        return metadata


def train(family: str, rows: int = 400) -> Trained:
    """``family`` trained on the synthetic dataset and described exactly as the trainer
    registers it (river families as signed pickles, under the stack's signing key)."""
    spec = synthetic.spec(families=(family,))
    plan = make_plan(spec, synthetic.schema())
    candidate = Trainer(plan, synthetic.rows(rows, seed=2)).run()
    window = model_pb2.MaterializedWindow(
        window=model_pb2.DataWindow(dataset="credit"), content_sha256="ab" * 32, row_count=rows
    )
    metadata, artifact = version_metadata(
        plan=plan,
        spec=spec,
        request=TrainRequest(request_id="r-" + family),
        candidate=candidate,
        window=window,
        code_version="test",
        parent_version=0,
        signing_key=SIGNING_KEY.encode(),
    )
    fresh = feature_matrix(synthetic.rows(12, seed=5), plan.features)
    return Trained(candidate.pipeline, metadata, artifact, fresh)


def columns_request(name: str, X: np.ndarray, **parameters: Any) -> oip.ModelInferRequest:
    """One raw tensor per feature: numbers FP64, the category BYTES."""
    request = oip.ModelInferRequest(model_name=name)
    for key, value in parameters.items():
        if isinstance(value, bool):
            request.parameters[key].bool_param = value
        else:
            request.parameters[key].string_param = value
    for i, feature in enumerate(FEATURE_NAMES):
        if feature == "color":
            request.inputs.add(name=feature, datatype="BYTES", shape=[len(X)])
            request.raw_input_contents.append(encode_bytes_elements([str(v) for v in X[:, i]]))
        else:
            request.inputs.add(name=feature, datatype="FP64", shape=[len(X)])
            request.raw_input_contents.append(np.asarray(X[:, i], dtype="<f8").tobytes())
    return request


def json_columns(X: np.ndarray) -> list[dict[str, Any]]:
    """The same tensors as HTTP/JSON inputs."""
    return [
        {
            "name": feature,
            "datatype": "BYTES" if feature == "color" else "FP64",
            "shape": [len(X)],
            "data": [str(v) if feature == "color" else float(v) for v in X[:, i]],
        }
        for i, feature in enumerate(FEATURE_NAMES)
    ]
