"""Input checks: each refusal names the field a caller has to fix."""

from __future__ import annotations

import pytest

from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.registry import validation
from services.registry.errors import InvalidArgument, TooLarge

GOOD_SHA = "a" * 64


@pytest.mark.parametrize("name", ["demo", "Demo-2", "a", "x" * 128, "churn.v2_final", "9lives"])
def test_good_model_names(name: str) -> None:
    assert validation.model_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 129,
        "../x",
        "a/b",
        "a\\b",
        ".hidden",
        "-x",
        "_x",
        "a b",
        "a\n",
        "line\nbreak",
        "nul\x00",
        "é",
    ],
)
def test_bad_model_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validation.model_name(name, "name")
    assert caught.value.field == "name"


@pytest.mark.parametrize("alias", ["Production", "1st", "a/b", "prod\n", "", "x" * 64, "with space"])
def test_bad_aliases(alias: str) -> None:
    with pytest.raises(InvalidArgument):
        validation.alias(alias)


def metadata(**changes: object) -> registry_pb2.VersionMetadata:
    value = registry_pb2.VersionMetadata(
        model_name="demo", artifact=registry_pb2.Artifact(sha256=GOOD_SHA, size_bytes=10, format="skops")
    )
    for path, new in changes.items():
        target = value
        *parents, leaf = path.split("__")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, leaf, new)
    return value


def field_of(value: registry_pb2.VersionMetadata) -> str:
    with pytest.raises(InvalidArgument) as caught:
        validation.version_metadata(value, max_artifact_bytes=1000)
    return caught.value.field


def test_good_metadata_passes() -> None:
    validation.version_metadata(metadata(), max_artifact_bytes=1000)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"artifact__sha256": "A" * 64}, "metadata.artifact.sha256"),
        ({"artifact__sha256": "abc"}, "metadata.artifact.sha256"),
        ({"artifact__size_bytes": 0}, "metadata.artifact.size_bytes"),
        ({"artifact__format": "pickle"}, "metadata.artifact.format"),
        ({"artifact__format": "river-hmac"}, "metadata.signature_hmac"),
        ({"signature_hmac": "zz"}, "metadata.signature_hmac"),
        ({"lineage__parent_version": -1}, "metadata.lineage.parent_version"),
        ({"lineage__data__content_sha256": "nothex"}, "metadata.lineage.data.content_sha256"),
        ({"lineage__data__window__dataset": "../etc"}, "metadata.lineage.data.window.dataset"),
        ({"card__description": "bell\x07"}, "metadata.card.description"),
    ],
)
def test_bad_metadata_names_the_field(changes: dict[str, object], field: str) -> None:
    assert field_of(metadata(**changes)) == field


def test_non_finite_metrics_and_gates_are_refused() -> None:
    value = metadata()
    value.metrics["accuracy"] = float("inf")
    assert field_of(value) == "metadata.metrics[accuracy]"
    value = metadata()
    value.gates.append(model_pb2.GateResult(name="g", value=float("nan")))
    assert field_of(value) == "metadata.gates[0].value"


def test_signature_checks() -> None:
    value = metadata()
    value.signature.inputs.append(model_pb2.TensorSpec(name="features", datatype="FLOAT", shape=[-1, 2]))
    assert field_of(value) == "metadata.signature.inputs[0].datatype"
    value = metadata()
    value.signature.feature_names.extend(["f0", "f0"])
    assert field_of(value) == "metadata.signature.feature_names"
    value = metadata()
    value.signature.inputs.append(model_pb2.TensorSpec(name="x", datatype="FP64", shape=[-2]))
    assert field_of(value) == "metadata.signature.inputs[0].shape"


def test_a_spec_must_name_the_same_model() -> None:
    value = metadata()
    value.spec.CopyFrom(model_pb2.ModelSpec(model_name="other", dataset="demo"))
    assert field_of(value) == "metadata.spec.model_name"


def test_too_large_is_its_own_error() -> None:
    with pytest.raises(TooLarge):
        validation.version_metadata(metadata(artifact__size_bytes=1001), max_artifact_bytes=1000)


def test_tag_and_metric_limits() -> None:
    with pytest.raises(InvalidArgument, match="more than 64"):
        validation.tags({f"k{i}": "v" for i in range(65)})
    with pytest.raises(InvalidArgument) as caught:
        validation.tags({"bad key": "v"})
    assert caught.value.field == "tags[bad key]"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dataset": ""}, "spec.dataset"),
        ({"metric": "bad metric"}, "spec.metric"),
        ({"holdout_fraction": 1.0}, "spec.holdout_fraction"),
        ({"time_budget_seconds": -1.0}, "spec.time_budget_seconds"),
        ({"task": 9}, "spec.task"),
    ],
)
def test_spec_checks(changes: dict[str, object], field: str) -> None:
    spec = model_pb2.ModelSpec(model_name="demo", dataset="demo", metric="accuracy", holdout_fraction=0.2)
    for name, value in changes.items():
        setattr(spec, name, value)
    with pytest.raises(InvalidArgument) as caught:
        validation.spec(spec)
    assert caught.value.field == field


def test_estimator_json_must_be_an_object() -> None:
    spec = model_pb2.ModelSpec(model_name="demo", dataset="demo")
    spec.estimators.append(model_pb2.EstimatorSpec(family="lr", params_json="[1]"))
    with pytest.raises(InvalidArgument, match="JSON object") as caught:
        validation.spec(spec)
    assert caught.value.field == "spec.estimators[0].params_json"


def test_version_refs() -> None:
    validation.version_ref(3, "")
    validation.version_ref(0, "production")
    for version, alias in ((0, ""), (3, "production"), (-1, "")):
        with pytest.raises(InvalidArgument):
            validation.version_ref(version, alias)


def test_page_size_is_capped() -> None:
    assert validation.page_size(0, 100, 500) == 100
    assert validation.page_size(10_000, 100, 500) == 500
    with pytest.raises(InvalidArgument):
        validation.page_size(-1, 100, 500)
