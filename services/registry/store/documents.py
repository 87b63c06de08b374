"""The stored form of the registry's records, and the protobuf messages the API speaks:
the one place that knows both.

A version's immutable part (artifact, metrics, signature, lineage ...) is kept as the
serialized ``ModelVersion`` it was registered with, so nothing is lost in translation;
the fields that change (status, aliases, review) and the ones searched on (dataset,
content hash, tags, metrics as key/value pairs, which keeps arbitrary names out of
field paths) sit beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.auth import DEFAULT_TEAM
from services.common.mongo import Document
from services.common.proto.mlops.v1 import model_pb2, registry_pb2


def timestamp(value: datetime | None) -> Timestamp:
    stamp = Timestamp()
    if value is not None:
        stamp.FromDatetime(value)
    return stamp


def key_values(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A map as a list of ``{k, v}`` pairs: queryable, whatever characters the keys hold."""
    return [{"k": k, "v": v} for k, v in sorted(values.items())]


def from_key_values(pairs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {pair["k"]: pair["v"] for pair in pairs or ()}


def model_to_proto(doc: Document) -> registry_pb2.Model:
    return registry_pb2.Model(
        name=doc["_id"],
        description=doc.get("description", ""),
        tags=from_key_values(doc.get("tags")),
        promotion_policy=doc.get("promotion_policy", registry_pb2.PROMOTION_POLICY_AUTO),
        aliases=doc.get("aliases", {}),
        latest_version=doc.get("latest_version", 0),
        created_at=timestamp(doc.get("created_at")),
        updated_at=timestamp(doc.get("updated_at")),
        created_by=doc.get("created_by", ""),
        latest_spec_version=doc.get("latest_spec_version", 0),
        team=doc.get("team", DEFAULT_TEAM),
    )


def version_document(version: registry_pb2.ModelVersion, status: int, now: datetime) -> Document:
    """The stored form of a new version (``version`` holds its immutable part)."""
    data = version.lineage.data
    return {
        "model_name": version.model_name,
        "version": version.version,
        "team": version.team,
        "status": status,
        "aliases": [],
        "proto": version.SerializeToString(),
        "artifact_sha256": version.artifact.sha256,
        "metrics": key_values(dict(version.metrics)),
        "tags": key_values(dict(version.tags)),
        "dataset": data.window.dataset or version.spec.dataset,
        "content_sha256": data.content_sha256,
        "parent_version": version.lineage.parent_version,
        "train_request_id": version.lineage.train_request_id,
        "code_version": version.lineage.code_version,
        "rolled_back": False,
        "review": None,
        "created_at": now,
        "updated_at": now,
        "created_by": version.created_by,
    }


def version_to_proto(doc: Document) -> registry_pb2.ModelVersion:
    version = registry_pb2.ModelVersion.FromString(doc["proto"])
    version.status = doc["status"]
    version.aliases[:] = sorted(doc.get("aliases", ()))
    version.updated_at.CopyFrom(timestamp(doc.get("updated_at")))
    version.rolled_back = bool(doc.get("rolled_back"))
    version.team = doc.get("team", DEFAULT_TEAM)
    review = doc.get("review")
    if review:
        version.review.CopyFrom(
            registry_pb2.Review(
                decision=review["decision"],
                reviewer=review["reviewer"],
                comment=review["comment"],
                reviewed_at=timestamp(review["reviewed_at"]),
            )
        )
    return version


def summary(version: registry_pb2.ModelVersion) -> registry_pb2.ModelVersion:
    """A version as lists, searches and lineage return it: without its reference profile,
    which can outweigh everything else in it (a page of them would be megabytes)."""
    version.ClearField("reference_profile")
    return version


def version_summary(doc: Document) -> registry_pb2.ModelVersion:
    return summary(version_to_proto(doc))


def spec_to_proto(doc: Document) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec.FromString(doc["proto"])
    spec.spec_version = doc["spec_version"]
    return spec


def alias_change_document(model_name: str, change: registry_pb2.AliasChange) -> Document:
    return {
        "model_name": model_name,
        "alias": change.alias,
        "version": change.version,
        "previous_version": change.previous_version,
        "actor": change.actor,
        "changed_at": change.changed_at.ToDatetime(UTC),
        "reason": change.reason,
        "request_id": change.request_id,
        "action": change.action,
    }


def alias_change_to_proto(doc: Document) -> registry_pb2.AliasChange:
    return registry_pb2.AliasChange(
        alias=doc["alias"],
        version=doc["version"],
        previous_version=doc["previous_version"],
        actor=doc["actor"],
        changed_at=timestamp(doc["changed_at"]),
        reason=doc.get("reason", ""),
        request_id=doc.get("request_id", ""),
        action=doc["action"],
    )


def audit_to_proto(doc: Document) -> registry_pb2.AuditRecord:
    return registry_pb2.AuditRecord(
        id=str(doc["_id"]),
        occurred_at=timestamp(doc["occurred_at"]),
        actor=doc["actor"],
        action=doc["action"],
        resource=doc["resource"],
        before_json=json.dumps(doc.get("before"), sort_keys=True, default=str) if doc.get("before") else "",
        after_json=json.dumps(doc.get("after"), sort_keys=True, default=str) if doc.get("after") else "",
        outcome=doc["outcome"],
        request_id=doc.get("request_id", ""),
        detail=doc.get("detail", ""),
        transport=doc.get("transport", ""),
        team=doc.get("team", ""),
        count=doc.get("count", 1),
        last_at=timestamp(doc.get("last_at") or doc["occurred_at"]),
    )


def team_to_proto(doc: Document) -> registry_pb2.Team:
    return registry_pb2.Team(
        name=doc["_id"],
        description=doc.get("description", ""),
        members=[
            registry_pb2.TeamMember(
                subject=m["subject"],
                scopes=m["scopes"],
                added_at=timestamp(m.get("added_at")),
                added_by=m.get("added_by", ""),
            )
            for m in doc.get("members", ())
        ],
        created_at=timestamp(doc.get("created_at")),
        created_by=doc.get("created_by", ""),
    )


def token_to_proto(doc: Document) -> registry_pb2.TokenInfo:
    info = registry_pb2.TokenInfo(
        id=doc["_id"],
        subject=doc.get("subject", ""),
        scopes=doc.get("scopes", []),
        teams=doc.get("teams", []),
        issued_at=timestamp(doc.get("issued_at")),
        expires_at=timestamp(doc["expires_at"]),
        issued_by=doc.get("issued_by", ""),
        revoked_by=doc.get("revoked_by", ""),
        revoke_reason=doc.get("revoke_reason", ""),
        key_id=doc.get("key_id", ""),
    )
    if doc.get("revoked_at") is not None:
        info.revoked_at.CopyFrom(timestamp(doc["revoked_at"]))
    return info
