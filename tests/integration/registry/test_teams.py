"""Teams and tokens through the registry's real APIs: team beta can neither see nor change
team alpha's model over gRPC, REST or the CLI; tokens come from the registry, expire,
and are refused once revoked; approvals stay four-eyes within the owning team; every
audit record names the team; repeated denials are one record."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest

from services.common.auth import Scope
from services.common.clients.access import AccessClient
from services.common.clients.registry import MANUAL, RegistryClient
from services.common.clients.runs import RunClient
from services.common.errors import NotFound, PlatformError
from services.common.proto.mlops.v1 import registry_pb2
from services.common.proto.mlops.v1.events_pb2 import TrainResult, TrainStatus
from services.registry.app import RegistryApp
from tests.conftest import Infra
from tests.helpers.artifacts import model_bytes
from tests.helpers.cli import Cli, json_document
from tests.helpers.waiting import eventually
from tests.integration.registry.helpers import metadata

WEEK = 7 * 24 * 3600


async def status_of(call: Awaitable[Any]) -> grpc.StatusCode:
    """The status a call through the shared client ends with (it raises the platform error)."""
    try:
        await call
    except PlatformError as exc:
        return grpc.StatusCode[exc.kind.grpc_code]
    return grpc.StatusCode.OK


@dataclass
class Teams:
    """Teams alpha and beta, each with a writer (read, write, promote) and an approver, and
    tokens the registry issued for them."""

    alpha: str
    beta: str
    tokens: dict[str, str]
    address: str
    http: str

    def client(self, who: str) -> RegistryClient:
        token = self.tokens[who]
        return RegistryClient(self.address, lambda: token)


@pytest.fixture(scope="module")
async def teams(infra: Infra, registry_app: RegistryApp) -> AsyncIterator[Teams]:
    suffix = uuid.uuid4().hex[:6]
    alpha, beta = f"alpha-{suffix}", f"beta-{suffix}"
    address = f"127.0.0.1:{registry_app.grpc_port}"
    tokens: dict[str, str] = {}
    async with AccessClient(address, lambda: infra.token(Scope.ADMIN, subject="admin")) as admin:
        for team in (alpha, beta):
            await admin.create_team(team, f"the {team} team")
            writer, approver = f"user:{team}-writer", f"user:{team}-approver"
            await admin.add_member(team, writer, ["read", "write", "promote"])
            await admin.add_member(team, approver, ["read", "approve"])
            for who, scopes in ((writer, ["read", "write", "promote"]), (approver, ["read", "approve"])):
                created = await admin.create_token(who, scopes, teams=[team], ttl_seconds=3600)
                tokens[who] = created.token
    yield Teams(alpha, beta, tokens, address, f"http://127.0.0.1:{registry_app.http_port}")


async def test_team_beta_neither_sees_nor_changes_team_alphas_model_over_grpc(
    teams: Teams, admin: RegistryClient, model_name: str
) -> None:
    alpha = teams.client(f"user:{teams.alpha}-writer")
    beta = teams.client(f"user:{teams.beta}-writer")
    async with alpha, beta:
        model = await alpha.create_model(model_name, team=teams.alpha)
        assert model.team == teams.alpha
        first = await alpha.create_version(metadata(model_name, model_bytes("a1")), model_bytes("a1"))
        assert first.team == teams.alpha

        refused: dict[str, Callable[[], Awaitable[Any]]] = {
            "GetModel": lambda: beta.get_model(model_name),
            "GetModelVersion": lambda: beta.get_version(model_name, 1),
            "ListModelVersions": lambda: beta.list_versions(model_name),
            "DownloadArtifact": lambda: beta.download_artifact(model_name, 1),
            "GetLineage": lambda: beta.lineage(model_name, 1),
            "UpdateModel": lambda: beta.update_model(model_name, description="mine now"),
            "CreateModelVersion": lambda: beta.create_version(
                metadata(model_name, model_bytes("b1")), model_bytes("b1")
            ),
            "SetAlias": lambda: beta.set_alias(model_name, "staging", 1),
            "Rollback": lambda: beta.rollback(model_name),
            "ArchiveVersion": lambda: beta.archive(model_name, 1),
        }
        for method, call in refused.items():
            assert await status_of(call()) == grpc.StatusCode.NOT_FOUND, method
        # Exactly what a model that does not exist gets: the name does not leak.
        assert await status_of(beta.get_model(model_name + "-none")) == grpc.StatusCode.NOT_FOUND
        assert model_name not in {m.name for m in await beta.list_models()}
        search = registry_pb2.SearchModelVersionsRequest(model_name=model_name)
        assert await beta.search_versions(search) == []
        assert [v.version for v in await alpha.search_versions(search)] == [1]
        assert await status_of(beta.create_model(model_name + "-x", team=teams.alpha)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await status_of(beta.create_model(model_name)) == grpc.StatusCode.ALREADY_EXISTS

        # Beta's model trained on the same data does not show alpha's in its lineage.
        mine = await beta.create_model(model_name + "-b")
        assert mine.team == teams.beta, "a caller's only team is where its models go"
        await beta.create_version(metadata(mine.name, model_bytes("b2")), model_bytes("b2"))
        beta_lineage = await beta.lineage(mine.name, 1)
        assert [v.model_name for v in beta_lineage.same_data] == []
        admin_lineage = await admin.lineage(mine.name, 1)
        assert model_name in {v.model_name for v in admin_lineage.same_data}, "admins see all"

    unchanged = await admin.get_model(model_name)
    assert (unchanged.description, unchanged.latest_version, dict(unchanged.aliases)) == (
        "",
        1,
        {"production": 1},
    )
    log = await admin.audit_log(registry_pb2.ListAuditRecordsRequest(resource_prefix=f"models/{model_name}"))
    records = [r for r in log.records if r.resource.split("/")[1] == model_name]
    assert records and {r.team for r in records if r.outcome == "ok"} == {teams.alpha}
    beta_tries = [r for r in records if r.actor == f"user:{teams.beta}-writer"]
    assert beta_tries and {r.outcome for r in beta_tries} == {"not_found", "already_exists"}
    assert {r.team for r in beta_tries if r.action == "SetAlias"} == {teams.alpha}, (
        "the real team, for admins"
    )


async def test_team_beta_neither_sees_nor_changes_team_alphas_model_over_rest(
    teams: Teams, admin: RegistryClient, model_name: str
) -> None:
    await admin.create_model(model_name, team=teams.alpha)
    await admin.create_version(metadata(model_name, model_bytes("r1")), model_bytes("r1"))
    as_beta = {"Authorization": f"Bearer {teams.tokens[f'user:{teams.beta}-writer']}"}
    as_alpha = {"Authorization": f"Bearer {teams.tokens[f'user:{teams.alpha}-writer']}"}
    async with httpx.AsyncClient(base_url=teams.http, timeout=30) as http:
        for method, path, body in [
            ("GET", f"/v1/models/{model_name}", None),
            ("GET", f"/v1/models/{model_name}/versions/1", None),
            ("GET", f"/v1/models/{model_name}/versions/1/artifact", None),
            ("PATCH", f"/v1/models/{model_name}", {"description": "mine"}),
            ("PUT", f"/v1/models/{model_name}/aliases/staging", {"version": 1}),
        ]:
            answer = await http.request(method, path, json=body, headers=as_beta)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["detail"] == f"model {model_name!r} not found"
        listed = (await http.get("/v1/models", params={"name_contains": model_name}, headers=as_beta)).json()
        assert listed["models"] == []
        searched = (await http.get("/v1/versions", params={"model_name": model_name}, headers=as_beta)).json()
        assert searched["versions"] == []
        mine = (await http.get(f"/v1/models/{model_name}", headers=as_alpha)).json()
        assert mine["team"] == teams.alpha
        created = await http.post(
            "/v1/models", json={"name": model_name + "-r", "team": teams.alpha}, headers=as_beta
        )
        assert created.status_code == 403, created.text
        teams_seen = (await http.get("/v1/teams", headers=as_beta)).json()
        assert [t["name"] for t in teams_seen["teams"]] == [teams.beta]
        assert (await http.get(f"/v1/teams/{teams.alpha}", headers=as_beta)).status_code == 404
        keys = (await http.get("/.well-known/jwks.json")).json()
        assert keys["keys"] and all("d" not in key for key in keys["keys"])


async def test_team_beta_neither_sees_nor_changes_team_alphas_model_over_the_cli(
    teams: Teams, admin: RegistryClient, model_name: str, tmp_path: Path
) -> None:
    cli = Cli(teams.address, teams.tokens[f"user:{teams.alpha}-writer"], tmp_path)
    beta = teams.tokens[f"user:{teams.beta}-writer"]
    code, out, err = await cli("register", model_name, "--team", teams.alpha, "--json")
    assert code == 0, err
    assert json_document(out)["team"] == teams.alpha
    await admin.create_version(metadata(model_name, model_bytes("c1")), model_bytes("c1"))

    code, _, err = await cli("show", model_name, token=beta)
    assert code == 5, err  # not found, as if there were no such model
    code, out, _ = await cli("list", "--json", token=beta)
    assert model_name not in {m["name"] for m in json_document(out)}
    code, _, _ = await cli("set-alias", model_name, "staging", "1", token=beta)
    assert code == 5
    code, _, err = await cli("register", model_name + "-c", "--team", teams.alpha, token=beta)
    assert code == 4, err  # denied: beta may not write in alpha
    assert (await admin.get_model(model_name)).aliases == {"production": 1}


async def test_approvals_stay_four_eyes_within_the_owning_team(
    teams: Teams, admin: RegistryClient, model_name: str
) -> None:
    writer = teams.client(f"user:{teams.alpha}-writer")
    approver = teams.client(f"user:{teams.alpha}-approver")
    outsider = teams.client(f"user:{teams.beta}-approver")
    async with writer, approver, outsider:
        await writer.create_model(model_name, policy=MANUAL, team=teams.alpha)
        await writer.create_version(metadata(model_name, model_bytes("p1")), model_bytes("p1"))
        assert await status_of(outsider.approve(model_name, 1)) == grpc.StatusCode.NOT_FOUND
        assert await status_of(writer.approve(model_name, 1)) == grpc.StatusCode.PERMISSION_DENIED
        approved = await approver.approve(model_name, 1, "checked")
        assert approved.review.reviewer == f"user:{teams.alpha}-approver"
        assert list(approved.aliases) == ["production"]


async def test_a_token_comes_from_the_registry_expires_by_default_and_is_refused_once_revoked(
    teams: Teams, infra: Infra, registry_app: RegistryApp, tmp_path: Path
) -> None:
    cli = Cli(teams.address, infra.token(Scope.ADMIN, subject="operator"), tmp_path)
    subject = f"app:{teams.alpha}"
    code, _, err = await cli.run("teams", "add-member", teams.alpha, subject, "-s", "read", "-s", "predict")
    assert code == 0, err
    before = time.time()
    code, out, err = await cli.run(
        "token", "create", "--subject", subject, "-s", "read", "--team", teams.alpha, "--json"
    )
    assert code == 0, err
    created = json_document(out)
    assert {"token", "id", "expires_at"} <= set(created)
    claims = jwt.decode(created["token"], options={"verify_signature": False})
    assert claims["jti"] == created["id"] and claims["teams"] == [teams.alpha]
    assert before + WEEK - 5 <= claims["exp"] <= time.time() + WEEK, "expires after the registry's default"

    code, out, _ = await cli.run("token", "list", "--subject", subject, "--json")
    assert [t["id"] for t in json_document(out)] == [created["id"]]
    reader = RegistryClient(teams.address, lambda: created["token"])
    async with reader:
        assert await reader.list_models(team=teams.alpha) is not None
        code, _, err = await cli.run("token", "revoke", created["id"], "--reason", "leaked")
        assert code == 0, err
        assert await status_of(reader.list_models()) == grpc.StatusCode.UNAUTHENTICATED
    code, out, _ = await cli.run("token", "list", "--subject", subject, "--json")
    assert json_document(out) == []
    code, out, _ = await cli.run("token", "list", "--subject", subject, "--include-revoked", "--json")
    assert json_document(out)[0]["revoked_at"] is not None

    # Only members get tokens for a team, and no more than their scopes there.
    code, _, err = await cli.run(
        "token", "create", "--subject", "user:stranger", "-s", "read", "-t", teams.alpha
    )
    assert code == 1 and "not a member" in err
    code, _, err = await cli.run("token", "create", "--subject", subject, "-s", "write", "-t", teams.alpha)
    assert code == 1 and "not write" in err
    code, _, err = await cli.run(
        "token", "create", "--subject", subject, "-s", "read", "--ttl", str(365 * 86400)
    )
    assert code == 2 and "ttl_seconds" in err


async def test_repeated_denials_are_one_audit_record_with_a_count(
    registry_app: RegistryApp, admin: RegistryClient
) -> None:
    assert registry_app.registry is not None
    request_id = uuid.uuid4().hex
    async with RegistryClient(f"127.0.0.1:{registry_app.grpc_port}", lambda: "") as anonymous:
        for _ in range(50):
            assert await status_of(anonymous.get_model("whatever")) == grpc.StatusCode.UNAUTHENTICATED
    await registry_app.registry.refusals.flush()

    async def records() -> list[registry_pb2.AuditRecord]:
        page = await admin.audit_log(
            registry_pb2.ListAuditRecordsRequest(actor="anonymous", action="GetModel", page_size=500)
        )
        return list(page.records)

    found = await eventually(records, lambda rs: sum(r.count for r in rs) >= 50)
    assert len(found) <= 2, "one record per minute window"  # the 50 calls may straddle a minute
    assert request_id not in {r.request_id for r in found}


async def test_audit_records_expire_after_the_retention(registry_app: RegistryApp) -> None:
    assert registry_app.registry is not None
    indexes = await registry_app.registry._store.db["audit_log"].index_information()
    ttl = [i for i in indexes.values() if "expireAfterSeconds" in i]
    assert [(i["key"], i["expireAfterSeconds"]) for i in ttl] == [
        ([("occurred_at", 1)], registry_app.settings.audit_retention_seconds)
    ]


async def test_a_training_run_is_seen_by_its_models_team_only(
    teams: Teams, registry_app: RegistryApp, model_name: str
) -> None:
    assert registry_app.registry is not None
    async with teams.client(f"user:{teams.alpha}-writer") as alpha:
        await alpha.create_model(model_name, team=teams.alpha)
    orphan = f"{model_name}-new"  # the trainer creates it, in the default team
    for run_id, model in ((f"{model_name}-r1", model_name), (f"{model_name}-r2", orphan)):
        started = TrainResult(request_id=run_id, model_name=model, status=TrainStatus.TRAIN_STATUS_STARTED)
        await registry_app.registry.record_result(started)

    def runs_of(who: str) -> RunClient:
        token = teams.tokens[who]
        return RunClient(teams.address, lambda: token)

    async with (
        runs_of(f"user:{teams.alpha}-writer") as alpha_runs,
        runs_of(f"user:{teams.beta}-writer") as beta_runs,
    ):
        assert [r.run_id for r in await alpha_runs.list_runs(model_name)] == [f"{model_name}-r1"]
        assert (await alpha_runs.get_run(f"{model_name}-r1")).model_name == model_name
        assert await beta_runs.list_runs(model_name) == []
        assert model_name not in {r.model_name for r in await beta_runs.list_runs()}
        with pytest.raises(NotFound):  # as if it did not exist
            await beta_runs.get_run(f"{model_name}-r1")
        with pytest.raises(NotFound):  # the default team's: neither alpha's nor beta's
            await alpha_runs.get_run(f"{model_name}-r2")
