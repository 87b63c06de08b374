"""What the registry stores with a candidate: metadata, lineage and the artifact. No I/O.

Lineage records everything needed to reproduce or audit the version: the window as
materialised (bounds, row count, content hash), the code and package versions, the
parent version, the request and what triggered it. Parameters hold the winning
configuration and every search trial, so "why this model" has an answer.
"""

from __future__ import annotations

import json
import platform
from functools import cache
from importlib import metadata
from typing import Any

from services.common.artifacts import sha256_hex
from services.common.flavors import flavor
from services.common.flavors.base import SIGNATURE_HMAC_PARAM
from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import Lineage, MaterializedWindow, ModelSpec
from services.common.proto.mlops.v1.registry_pb2 import Artifact, ModelCard, VersionMetadata
from services.common.trials import trials_key
from services.trainer.errors import SpecError
from services.trainer.plan import TrainingPlan
from services.trainer.training import TrainedCandidate

RECORDED_PACKAGES = ("scikit-learn", "numpy", "scipy", "river", "skops")
MAX_PARAM_CHARS = 4096
"""The registry's limit on one parameter value: longer lists are split over several keys."""


@cache
def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of the packages that decide what a trained model computes: the trainer's
    own and ``extra`` (the packages of the flavor the model is stored with)."""
    versions = {"python": platform.python_version()}
    for name in dict.fromkeys((*RECORDED_PACKAGES, *extra)):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def trigger_name(trigger: TrainTrigger.ValueType) -> str:
    """``drift``, ``manual`` ... (``unspecified`` when the request did not say)."""
    return TrainTrigger.Name(trigger).removeprefix("TRAIN_TRIGGER_").lower()


def lineage(
    request: TrainRequest,
    window: MaterializedWindow,
    code_version: str,
    parent_version: int,
    packages: tuple[str, ...] = (),
) -> Lineage:
    return Lineage(
        data=window,
        code_version=code_version,
        package_versions=package_versions(packages),
        parent_version=request.parent_version or parent_version,
        train_request_id=request.request_id,
        trigger=trigger_name(request.trigger),
        drift_event_id=request.drift_event_id,
    )


def params(plan: TrainingPlan, candidate: TrainedCandidate) -> dict[str, str]:
    """String parameters: the chosen configuration, the split, the seed, and every search trial."""
    chosen = candidate.configuration
    out = {
        "family": chosen.family.name,
        "metric": plan.metric.name,
        "seed": str(plan.seed),
        "holdout_fraction": f"{plan.holdout_fraction:g}",
        "time_budget_seconds": f"{plan.time_budget_seconds:g}",
        "training_seconds": f"{candidate.seconds:.3f}",
        "features": json.dumps([f.name for f in plan.features]),
        "feature_kinds": json.dumps({f.name: f.kind.value for f in plan.features}),
    }
    for name, value in sorted(chosen.params.items()):
        out[f"estimator.{name}"] = json.dumps(value)
    if candidate.trials:
        out["search.strategy"] = "successive_halving"
        out["search.truncated"] = "true" if candidate.search_truncated else "false"
        records = [t.as_record() for t in candidate.trials]
        for i, part in enumerate(json_chunks(records, MAX_PARAM_CHARS)):
            out[trials_key(i)] = part
    return out


def json_chunks(records: list[dict[str, Any]], limit: int) -> list[str]:
    """``records`` as JSON lists of at most ``limit`` characters each, in order.

    Read them back by concatenating the lists of ``search.trials.000``, ``.001`` ... in
    key order. A record too long on its own is cut to its identifying fields.
    """
    parts: list[str] = []
    batch: list[str] = []
    size = 2
    for record in records:
        text = json.dumps(record, separators=(",", ":"), default=str)
        if len(text) + 2 > limit:
            text = json.dumps({k: record[k] for k in ("configuration", "family", "rung", "rows", "score")})
        if batch and size + len(text) + 1 > limit:
            parts.append("[" + ",".join(batch) + "]")
            batch, size = [], 2
        batch.append(text)
        size += len(text) + 1
    if batch:
        parts.append("[" + ",".join(batch) + "]")
    return parts


def serialize(model: Any, flavor_name: str, signing_key: bytes | None) -> tuple[bytes, str]:
    """``(artifact, hmac)``: ``model`` saved by its family's flavor (signed when the flavor is)."""
    saving = flavor(flavor_name)
    if saving.signed and signing_key is None:
        raise SpecError(
            f"{flavor_name} models are stored as signed pickles: set MLOPS_ARTIFACT_SIGNING_KEY on the trainer "
            "(and the same key on the registry)",
            field="estimators",
        )
    saved = saving.save(model, signing_key=signing_key)
    return saved.data, saved.signature_hmac


def version_metadata(
    *,
    plan: TrainingPlan,
    spec: ModelSpec,
    request: TrainRequest,
    candidate: TrainedCandidate,
    window: MaterializedWindow,
    code_version: str,
    parent_version: int,
    signing_key: bytes | None = None,
) -> tuple[VersionMetadata, bytes]:
    """The registry's ``VersionMetadata`` and the artifact it describes."""
    flavor_name = candidate.configuration.family.flavor
    artifact, signature_hmac = serialize(candidate.pipeline, flavor_name, signing_key)
    described = VersionMetadata(
        model_name=plan.model_name,
        artifact=Artifact(sha256=sha256_hex(artifact), size_bytes=len(artifact), format=flavor_name),
        signature_hmac=signature_hmac,
        metrics=candidate.metrics,
        params=params(plan, candidate) | ({SIGNATURE_HMAC_PARAM: signature_hmac} if signature_hmac else {}),
        signature=candidate.signature,
        lineage=lineage(request, window, code_version, parent_version, flavor(flavor_name).packages),
        gates=candidate.gates,
        gates_passed=candidate.gates_passed,
        tags={"flavor": flavor_name, "family": candidate.configuration.family.name},
        card=ModelCard(
            description=(
                f"{candidate.configuration.family.name} on {window.row_count} rows of dataset "
                f"{plan.dataset!r} (schema v{plan.schema_version}), {plan.metric.name} "
                f"{candidate.metrics.get(plan.metric.name, float('nan')):.4f} on the newest "
                f"{candidate.holdout_rows} rows held out"
            )
        ),
        spec=spec,
    )
    if candidate.reference.features:
        described.reference_profile.CopyFrom(candidate.reference)
    return described, artifact
