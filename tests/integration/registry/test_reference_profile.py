"""The registry keeps a version's reference profile as it was registered and hands it to
whoever reads the version; it refuses a bad one, over gRPC and REST alike, naming the field."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from google.protobuf import json_format

from services.common.clients.registry import RegistryClient
from services.common.errors import InvalidArgument
from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from tests.helpers.artifacts import random_artifact
from tests.integration.registry.helpers import metadata


def profile() -> model_pb2.ReferenceProfile:
    return model_pb2.ReferenceProfile(
        row_count=500,
        seed=7,
        features=[
            model_pb2.FeatureProfile(
                name=name,
                count=500,
                mean=0.1 * i,
                std=1.0,
                min=-3.0,
                max=3.0,
                quantiles=[model_pb2.Quantile(level=0.5, value=0.1 * i)],
                sample=[(j % 60) / 10 - 3.0 for j in range(256)],
            )
            for i, name in enumerate(("f0", "f1"))
        ],
    )


async def test_the_profile_round_trips_and_stays_out_of_lists(admin: RegistryClient, model_name: str) -> None:
    await admin.create_model(model_name)
    artifact = random_artifact()
    described = metadata(model_name, artifact)
    described.reference_profile.CopyFrom(profile())
    created = await admin.create_version(described, artifact)
    assert created.reference_profile == profile()

    assert (await admin.get_version(model_name, created.version)).reference_profile == profile()
    assert (await admin.get_version(model_name, alias="production")).reference_profile == profile()
    # Lists, searches and lineage leave it out: a page of profiles would be megabytes.
    (listed,) = await admin.list_versions(model_name)
    assert listed.version == created.version and not listed.HasField("reference_profile")
    (found,) = await admin.search_versions(registry_pb2.SearchModelVersionsRequest(model_name=model_name))
    assert not found.HasField("reference_profile")
    assert not (await admin.lineage(model_name, created.version)).version.HasField("reference_profile")


async def test_a_version_without_a_profile_has_none(admin: RegistryClient, model_name: str) -> None:
    await admin.create_model(model_name)
    artifact = random_artifact()
    created = await admin.create_version(metadata(model_name, artifact), artifact)
    assert not (await admin.get_version(model_name, created.version)).HasField("reference_profile")


async def test_a_bad_profile_is_refused_and_nothing_is_stored(admin: RegistryClient, model_name: str) -> None:
    await admin.create_model(model_name)
    artifact = random_artifact()
    described = metadata(model_name, artifact)
    described.reference_profile.CopyFrom(profile())
    described.reference_profile.features[1].sample[5] = math.nan
    with pytest.raises(InvalidArgument) as caught:
        await admin.create_version(described, artifact)
    assert "metadata.reference_profile.features[1].sample[5]" in caught.value.message
    assert await admin.list_versions(model_name) == []


async def test_the_rest_mirror_carries_the_profile_and_refuses_bad_ones(
    http: httpx.AsyncClient, model_name: str
) -> None:
    assert (await http.post("/v1/models", json={"name": model_name})).status_code == 201
    artifact = random_artifact()
    described = metadata(model_name, artifact)
    described.reference_profile.CopyFrom(profile())
    meta = json_format.MessageToDict(described, preserving_proto_field_name=True)

    meta["reference_profile"]["features"][0]["std"] = -1.0
    refused = await http.post(
        f"/v1/models/{model_name}/versions",
        data={"metadata": json.dumps(meta)},
        files={"artifact": ("model.skops", artifact)},
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["field"] == "metadata.reference_profile.features[0].std"

    meta["reference_profile"]["features"][0]["std"] = 1.0
    created = await http.post(
        f"/v1/models/{model_name}/versions",
        data={"metadata": json.dumps(meta)},
        files={"artifact": ("model.skops", artifact)},
    )
    assert created.status_code == 201, created.text
    fetched = await http.get(f"/v1/models/{model_name}/versions/{created.json()['version']}")
    returned = json_format.ParseDict(fetched.json()["reference_profile"], model_pb2.ReferenceProfile())
    assert returned == profile()
