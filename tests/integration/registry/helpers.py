"""Building version metadata the way the trainer does, and expecting the registry to refuse."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest

from services.common.artifacts import sha256_hex
from services.common.errors import PlatformError
from services.common.proto.mlops.v1 import model_pb2, registry_pb2

DATA_HASH = "ab" * 32


def metadata(
    name: str,
    artifact: bytes,
    *,
    gates_passed: bool = True,
    evaluated: bool = True,
    dataset: str = "demo",
    content_sha256: str = DATA_HASH,
    parent_version: int = 0,
    artifact_format: str = "skops",
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    train_request_id: str = "",
) -> registry_pb2.VersionMetadata:
    gates = (
        [model_pb2.GateResult(name="min_metric", passed=gates_passed, value=0.9, threshold=0.8)]
        if evaluated
        else []
    )
    return registry_pb2.VersionMetadata(
        model_name=name,
        artifact=registry_pb2.Artifact(
            sha256=sha256_hex(artifact), size_bytes=len(artifact), format=artifact_format
        ),
        metrics=metrics if metrics is not None else {"accuracy": 0.9},
        params={"C": "1.0"},
        signature=model_pb2.Signature(
            inputs=[model_pb2.TensorSpec(name="features", datatype="FP64", shape=[-1, 2])],
            outputs=[model_pb2.TensorSpec(name="probabilities", datatype="FP64", shape=[-1, 2])],
            feature_names=["f0", "f1"],
            classes=["0", "1"],
            task=model_pb2.TASK_CLASSIFICATION,
        ),
        lineage=model_pb2.Lineage(
            data=model_pb2.MaterializedWindow(
                window=model_pb2.DataWindow(dataset=dataset), content_sha256=content_sha256, row_count=100
            ),
            code_version="test",
            package_versions={"scikit-learn": "1.9"},
            parent_version=parent_version,
            train_request_id=train_request_id,
            trigger="manual",
        ),
        gates=gates,
        gates_passed=gates_passed and evaluated,
        tags=tags or {},
        card=registry_pb2.ModelCard(description="test model", intended_use="tests", limitations="none"),
    )


async def expect_status(code: grpc.StatusCode, call: Awaitable[object]) -> PlatformError:
    """The platform error the registry client raises for ``call``, of the kind ``code`` names."""
    with pytest.raises(PlatformError) as caught:
        await call
    assert caught.value.kind.grpc_code == code.name, caught.value.message
    return caught.value
