"""Checks on everything a caller sends, before anything is read or written.

Every check raises :class:`~services.registry.errors.InvalidArgument` naming the field
(``metadata.metrics[accuracy]``, ``alias`` ...), so both transports can tell the caller
exactly what to fix. Patterns are matched in full (``re.fullmatch``): a trailing newline
or a path separator never slips through.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping

from services.common.flavors import FLAVORS
from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.registry.errors import InvalidArgument, TooLarge

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,62}")
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
SHA256 = re.compile(r"[0-9a-f]{64}")
HMAC_HEX = re.compile(r"[0-9a-fA-F]{64}")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# The Open Inference Protocol's tensor datatypes.
DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)

MAX_TAGS = 64
MAX_METRICS = 256
MAX_PARAMS = 512
MAX_PACKAGES = 1024
MAX_TAG_VALUE = 1024
MAX_PARAM_VALUE = 4096
MAX_SHORT_TEXT = 256
MAX_TEXT = 10_000
MAX_FEATURES = 10_000
MAX_ESTIMATORS = 64
MAX_QUANTILES = 101
MAX_PROFILE_SAMPLE = 1024
"""Sample values one feature's reference profile may carry."""
MAX_PROFILE_SAMPLE_VALUES = 100_000
"""Sample values a whole reference profile may carry (about 0.9 MB)."""


def _fail(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", field=field)


def model_name(value: str, field: str = "model_name") -> str:
    if not value:
        raise _fail(field, "is required")
    if not MODEL_NAME.fullmatch(value):
        raise _fail(
            field,
            "must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return value


def alias(value: str, field: str = "alias") -> str:
    if not value:
        raise _fail(field, "is required")
    if not ALIAS.fullmatch(value):
        raise _fail(field, "must be 1-63 lowercase letters, digits, '_' or '-', starting with a letter")
    return value


def version_number(value: int, field: str = "version") -> int:
    if value < 1:
        raise _fail(field, "must be a version number >= 1")
    return value


def version_ref(version: int, alias_name: str) -> None:
    """A version is named by number or by alias, not both, not neither."""
    if version and alias_name:
        raise _fail("version", "give a version number or an alias, not both")
    if version < 0:
        raise _fail("version", "must be >= 1 (or 0 with an alias)")
    if not version and not alias_name:
        raise _fail("version", "give a version number or an alias")
    if alias_name:
        alias(alias_name)


def text(value: str, field: str, limit: int = MAX_TEXT, *, required: bool = False) -> str:
    if required and not value.strip():
        raise _fail(field, "is required")
    if len(value) > limit:
        raise _fail(field, f"is longer than {limit} characters")
    if CONTROL.search(value):
        raise _fail(field, "contains control characters")
    return value


def key(value: str, field: str) -> str:
    if not KEY.fullmatch(value):
        raise _fail(
            field, "keys are 1-128 characters of letters, digits and . _ : / -, starting alphanumeric"
        )
    return value


def string_map(values: Mapping[str, str], field: str, max_items: int, max_value: int) -> None:
    if len(values) > max_items:
        raise _fail(field, f"has more than {max_items} entries")
    for name, value in values.items():
        key(name, f"{field}[{name[:64]}]")
        text(value, f"{field}[{name}]", max_value)


def tags(values: Mapping[str, str], field: str = "tags") -> None:
    string_map(values, field, MAX_TAGS, MAX_TAG_VALUE)


def finite(value: float, field: str) -> float:
    if not math.isfinite(value):
        raise _fail(field, "must be a finite number")
    return value


def metrics(values: Mapping[str, float], field: str = "metrics") -> None:
    if len(values) > MAX_METRICS:
        raise _fail(field, f"has more than {MAX_METRICS} entries")
    for name, value in values.items():
        key(name, f"{field}[{name[:64]}]")
        finite(value, f"{field}[{name}]")


def dataset_name(value: str, field: str) -> str:
    if value and not MODEL_NAME.fullmatch(value):
        raise _fail(field, "must be 1-128 characters of letters, digits, '.', '_' or '-'")
    return value


def sha256(value: str, field: str) -> str:
    if not SHA256.fullmatch(value):
        raise _fail(field, "must be 64 lowercase hexadecimal characters")
    return value


def window(value: model_pb2.DataWindow, field: str) -> None:
    dataset_name(value.dataset, f"{field}.dataset")
    if value.max_rows < 0:
        raise _fail(f"{field}.max_rows", "must be >= 0")
    if value.min_rows < 0:
        raise _fail(f"{field}.min_rows", "must be >= 0")
    if value.HasField("start_time") and value.HasField("end_time"):
        if value.start_time.ToNanoseconds() > value.end_time.ToNanoseconds():
            raise _fail(f"{field}.start_time", "is after end_time")


def artifact(value: registry_pb2.Artifact, max_bytes: int, field: str = "metadata.artifact") -> None:
    sha256(value.sha256, f"{field}.sha256")
    if value.size_bytes <= 0:
        raise _fail(f"{field}.size_bytes", "must be the artifact's size in bytes (> 0)")
    if value.size_bytes > max_bytes:
        raise TooLarge(
            f"{field}.size_bytes: {value.size_bytes} bytes is over the limit of {max_bytes}",
            field=f"{field}.size_bytes",
        )
    if value.format not in FLAVORS:
        raise _fail(f"{field}.format", f"must be a flavor: one of {', '.join(FLAVORS)}")


def tensor_specs(values: Iterable[model_pb2.TensorSpec], field: str) -> None:
    seen: set[str] = set()
    for i, spec in enumerate(values):
        text(spec.name, f"{field}[{i}].name", MAX_SHORT_TEXT, required=True)
        if spec.name in seen:
            raise _fail(f"{field}[{i}].name", f"duplicate tensor name {spec.name!r}")
        seen.add(spec.name)
        if spec.datatype not in DATATYPES:
            raise _fail(f"{field}[{i}].datatype", f"must be one of {', '.join(DATATYPES)}")
        if len(spec.shape) > 8 or any(d < -1 for d in spec.shape):
            raise _fail(f"{field}[{i}].shape", "dimensions are sizes >= 0 or -1 (variable), at most 8")


def names(values: Iterable[str], field: str, limit: int = MAX_FEATURES) -> None:
    items = list(values)
    if len(items) > limit:
        raise _fail(field, f"has more than {limit} entries")
    if len(set(items)) != len(items):
        raise _fail(field, "has duplicates")
    for i, item in enumerate(items):
        text(item, f"{field}[{i}]", MAX_SHORT_TEXT, required=True)


def signature(value: model_pb2.Signature, field: str = "metadata.signature") -> None:
    tensor_specs(value.inputs, f"{field}.inputs")
    tensor_specs(value.outputs, f"{field}.outputs")
    names(value.feature_names, f"{field}.feature_names")
    names(value.classes, f"{field}.classes")


def lineage(value: model_pb2.Lineage, field: str = "metadata.lineage") -> None:
    window(value.data.window, f"{field}.data.window")
    if value.data.content_sha256:
        sha256(value.data.content_sha256, f"{field}.data.content_sha256")
    if value.data.row_count < 0:
        raise _fail(f"{field}.data.row_count", "must be >= 0")
    text(value.code_version, f"{field}.code_version", MAX_SHORT_TEXT)
    string_map(value.package_versions, f"{field}.package_versions", MAX_PACKAGES, MAX_SHORT_TEXT)
    if value.parent_version < 0:
        raise _fail(f"{field}.parent_version", "must be >= 0")
    text(value.train_request_id, f"{field}.train_request_id", MAX_SHORT_TEXT)
    text(value.trigger, f"{field}.trigger", MAX_SHORT_TEXT)
    text(value.drift_event_id, f"{field}.drift_event_id", MAX_SHORT_TEXT)


def gates(values: Iterable[model_pb2.GateResult], field: str = "metadata.gates") -> None:
    for i, gate in enumerate(values):
        text(gate.name, f"{field}[{i}].name", MAX_SHORT_TEXT, required=True)
        finite(gate.value, f"{field}[{i}].value")
        finite(gate.threshold, f"{field}[{i}].threshold")
        text(gate.detail, f"{field}[{i}].detail")


def card(value: registry_pb2.ModelCard, field: str = "metadata.card") -> None:
    text(value.description, f"{field}.description")
    text(value.intended_use, f"{field}.intended_use")
    text(value.limitations, f"{field}.limitations")


def spec(value: model_pb2.ModelSpec, field: str = "spec") -> None:
    """A training spec: what the registry can check without knowing the estimator families."""
    model_name(value.model_name, f"{field}.model_name")
    if not value.dataset:
        raise _fail(f"{field}.dataset", "is required")
    dataset_name(value.dataset, f"{field}.dataset")
    if value.schema_version < 0:
        raise _fail(f"{field}.schema_version", "must be >= 0")
    names(value.features, f"{field}.features")
    text(value.target, f"{field}.target", MAX_SHORT_TEXT)
    if value.task not in model_pb2.Task.values():
        raise _fail(f"{field}.task", "is not a known task")
    if value.metric:
        # The trainer owns the list of metrics; the registry only keeps the name well formed.
        key(value.metric, f"{field}.metric")
    if not math.isfinite(value.time_budget_seconds) or value.time_budget_seconds < 0:
        raise _fail(f"{field}.time_budget_seconds", "must be a finite number >= 0")
    if not math.isfinite(value.holdout_fraction) or not 0 <= value.holdout_fraction < 1:
        raise _fail(f"{field}.holdout_fraction", "must be in [0, 1)")
    window(value.window, f"{field}.window")
    for name in ("min_metric", "max_regression", "min_improvement", "max_noise_drop", "max_slice_gap"):
        finite(getattr(value.gates, name), f"{field}.gates.{name}")
    if len(value.estimators) > MAX_ESTIMATORS:
        raise _fail(f"{field}.estimators", f"has more than {MAX_ESTIMATORS} entries")
    for i, estimator in enumerate(value.estimators):
        text(estimator.family, f"{field}.estimators[{i}].family", MAX_SHORT_TEXT, required=True)
        json_object(estimator.params_json, f"{field}.estimators[{i}].params_json")
        json_object(estimator.search_space_json, f"{field}.estimators[{i}].search_space_json")


def json_object(value: str, field: str) -> None:
    if not value:
        return
    text(value, field, 100_000)
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise _fail(field, f"is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise _fail(field, "must be a JSON object")


def _finite_values(values: Iterable[float], field: str) -> None:
    for i, value in enumerate(values):
        if not math.isfinite(value):
            raise _fail(f"{field}[{i}]", "must be a finite number")


def feature_profile(value: model_pb2.FeatureProfile, field: str) -> None:
    """One feature's summary: finite, consistent (min <= quantiles <= max), its sample bounded."""
    text(value.name, f"{field}.name", MAX_SHORT_TEXT, required=True)
    if value.count < 0:
        raise _fail(f"{field}.count", "must be >= 0")
    if value.missing < 0:
        raise _fail(f"{field}.missing", "must be >= 0")
    for name in ("mean", "std", "min", "max"):
        finite(getattr(value, name), f"{field}.{name}")
    if value.std < 0:
        raise _fail(f"{field}.std", "must be >= 0")
    if value.min > value.max:
        raise _fail(f"{field}.min", "is above max")
    if len(value.quantiles) > MAX_QUANTILES:
        raise _fail(f"{field}.quantiles", f"has more than {MAX_QUANTILES} entries")
    previous = (-math.inf, -math.inf)
    for i, quantile in enumerate(value.quantiles):
        where = f"{field}.quantiles[{i}]"
        if not (math.isfinite(quantile.level) and 0.0 <= quantile.level <= 1.0):
            raise _fail(f"{where}.level", "must be in [0, 1]")
        finite(quantile.value, f"{where}.value")
        if quantile.level <= previous[0] or quantile.value < previous[1]:
            raise _fail(where, "quantiles must come in increasing level order, values not decreasing")
        if not value.min <= quantile.value <= value.max:
            raise _fail(f"{where}.value", "is outside [min, max]")
        previous = (quantile.level, quantile.value)
    if len(value.sample) > MAX_PROFILE_SAMPLE:
        raise _fail(f"{field}.sample", f"has more than {MAX_PROFILE_SAMPLE} values")
    if len(value.sample) > value.count:
        raise _fail(f"{field}.sample", "has more values than count")
    _finite_values(value.sample, f"{field}.sample")
    if value.sample and not value.min <= min(value.sample) <= max(value.sample) <= value.max:
        raise _fail(f"{field}.sample", "has values outside [min, max]")


def reference_profile(
    value: model_pb2.ReferenceProfile,
    feature_names: Iterable[str] = (),
    field: str = "metadata.reference_profile",
) -> None:
    """A version's training reference: features named once each (and, when the signature
    names its features, only those), counts within the rows profiled, samples bounded."""
    if value.row_count < 0:
        raise _fail(f"{field}.row_count", "must be >= 0")
    if len(value.features) > MAX_FEATURES:
        raise _fail(f"{field}.features", f"has more than {MAX_FEATURES} entries")
    known = set(feature_names)
    seen: set[str] = set()
    total = 0
    for i, feature in enumerate(value.features):
        where = f"{field}.features[{i}]"
        feature_profile(feature, where)
        if feature.name in seen:
            raise _fail(f"{where}.name", f"duplicate feature {feature.name!r}")
        seen.add(feature.name)
        if known and feature.name not in known:
            raise _fail(f"{where}.name", f"{feature.name!r} is not among the signature's feature_names")
        if feature.count + feature.missing > value.row_count:
            raise _fail(f"{where}.count", "count + missing is more than the rows profiled (row_count)")
        total += len(feature.sample)
        if total > MAX_PROFILE_SAMPLE_VALUES:
            raise _fail(
                f"{field}.features", f"carry more than {MAX_PROFILE_SAMPLE_VALUES} sample values in all"
            )


def version_metadata(value: registry_pb2.VersionMetadata, max_artifact_bytes: int) -> None:
    """Everything in a new version's metadata except the artifact's bytes."""
    model_name(value.model_name, "metadata.model_name")
    artifact(value.artifact, max_artifact_bytes)
    metrics(value.metrics, "metadata.metrics")
    string_map(value.params, "metadata.params", MAX_PARAMS, MAX_PARAM_VALUE)
    signature(value.signature)
    lineage(value.lineage)
    gates(value.gates)
    tags(value.tags, "metadata.tags")
    card(value.card)
    if value.HasField("spec"):
        spec(value.spec, "metadata.spec")
        if value.spec.model_name != value.model_name:
            raise _fail("metadata.spec.model_name", "must equal metadata.model_name")
    if value.HasField("reference_profile"):
        reference_profile(value.reference_profile, value.signature.feature_names)
    if value.signature_hmac and not HMAC_HEX.fullmatch(value.signature_hmac):
        raise _fail("metadata.signature_hmac", "must be 64 hexadecimal characters (HMAC-SHA256)")
    if (
        value.artifact.format in FLAVORS
        and FLAVORS[value.artifact.format].signed
        and not value.signature_hmac
    ):
        raise _fail("metadata.signature_hmac", f"is required for {value.artifact.format} artifacts")


def page_size(value: int, default: int, maximum: int) -> int:
    if value < 0:
        raise _fail("page_size", "must be >= 0")
    return min(value or default, maximum)
