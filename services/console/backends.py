"""The platform's APIs, called with the signed-in person's own token.

The console holds no credential of its own: every call to the registry (gRPC), the
monitors and ingest (HTTP) carries the token of the person whose request it serves, so
the console can show and do exactly what that token may. The token travels in a context
variable (:data:`current_token`) that the request's dependency sets, so one channel and
one connection pool serve everyone without a token ever outliving its request.

Failures come back as :class:`~services.common.errors.PlatformError` of the server's kind:
gRPC through the shared client, HTTP from the problem body every platform API answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import httpx

from services.common.clients.registry import Model, ModelVersion, RegistryClient
from services.common.errors import Kind, PlatformError, Unavailable, error_of, kind_of_http_status
from services.common.proto.mlops.v1 import registry_pb2

current_token: ContextVar[str] = ContextVar("console_token", default="")
"""The token of the person the running request serves (empty: nobody signed in)."""

AuditRecord = registry_pb2.AuditRecord
AliasChange = registry_pb2.AliasChange


class Registry(RegistryClient):
    """The registry client, plus the one-page reads a page of the console needs (the shared
    client reads every page, which a list of thousands of models should not)."""

    async def models_page(
        self,
        *,
        alias: str = "",
        name_contains: str = "",
        tags: dict[str, str] | None = None,
        page_size: int = 50,
        page_token: str = "",
    ) -> tuple[list[Model], str]:
        response = await self._registry.ListModels(
            registry_pb2.ListModelsRequest(
                alias=alias,
                name_contains=name_contains,
                tags=tags or {},
                page_size=page_size,
                page_token=page_token,
            ),
            metadata=self._metadata(None),
            timeout=self._timeout,
        )
        return list(response.models), response.next_page_token

    async def versions_page(
        self, name: str, *, page_size: int = 50, page_token: str = ""
    ) -> tuple[list[ModelVersion], str]:
        response = await self._registry.ListModelVersions(
            registry_pb2.ListModelVersionsRequest(
                model_name=name, page_size=page_size, page_token=page_token
            ),
            metadata=self._metadata(None),
            timeout=self._timeout,
        )
        return list(response.versions), response.next_page_token

    async def audit_trail(self, name: str, limit: int = 50) -> list[AuditRecord]:
        """The latest audit records of model ``name`` and its versions and aliases (admin scope)."""
        page = await self.audit_log(
            registry_pb2.ListAuditRecordsRequest(resource_prefix=f"models/{name}", page_size=limit)
        )
        own = f"models/{name}"
        # The prefix also matches models whose name starts with this one's.
        return [r for r in page.records if r.resource == own or r.resource.startswith(own + "/")]

    async def audit_of_request(self, request_id: str) -> list[AuditRecord]:
        """What the registry recorded for one request (admin scope)."""
        page = await self.audit_log(registry_pb2.ListAuditRecordsRequest(request_id=request_id, page_size=20))
        return list(page.records)


class HttpApi:
    """One platform HTTP API, called with :data:`current_token`."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, name: str):
        self._client = client
        self.base_url = base_url.rstrip("/")
        self.name = name

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The JSON answer to ``GET path``; a platform error of the server's kind otherwise."""
        try:
            response = await self._client.get(
                self.base_url + path,
                params=params,
                headers={"authorization": f"Bearer {current_token.get()}"},
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"{self.name} at {self.base_url} is unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise error_from_response(response, self.name)
        return response.json()


def error_from_response(response: httpx.Response, service: str) -> PlatformError:
    """The platform error a refused HTTP call stands for: the problem body's ``kind`` and
    ``field`` when it has them, else the kind its status means."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    kind = Kind.from_label(str(body.get("kind", ""))) or kind_of_http_status(response.status_code)
    detail = str(body.get("detail") or response.reason_phrase or response.status_code)
    return error_of(kind, f"{service}: {detail}", field=str(body.get("field", "")))


class Monitors:
    """Every monitor process: each watches a share of the models.

    A monitor address whose host name resolves to several addresses (a Kubernetes headless
    Service in front of the monitor's pods) stands for each of them: the console asks every
    process, as ``mlops drift status --url A --url B`` does.
    """

    def __init__(self, client: httpx.AsyncClient, urls: list[str]):
        self._client = client
        self._urls = urls

    async def _apis(self) -> list[HttpApi]:
        found: dict[str, HttpApi] = {}
        for url in self._urls:
            for each in await processes(url):
                found.setdefault(each, HttpApi(self._client, each, "monitor"))
        return list(found.values())

    async def status(self) -> list[dict[str, Any]]:
        """Every watched model, from every monitor that answers (at least one must)."""
        apis = await self._apis()
        answers = await asyncio.gather(*(api.get("/v1/status") for api in apis), return_exceptions=True)
        models: list[dict[str, Any]] = []
        seen: set[str] = set()
        failures = []
        for answer in answers:
            if isinstance(answer, PlatformError):
                failures.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                models += [m for m in answer.get("models", []) if m.get("model") not in seen]
                seen.update(str(m.get("model")) for m in models)
        if failures and len(failures) == len(answers):
            raise failures[0]
        return sorted(models, key=lambda m: str(m.get("model", "")))

    async def model(self, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The status and timeline of ``name`` from the monitor that watches it; None when none does."""
        path = quote(name, safe="")
        for api in await self._apis():
            try:
                status = await api.get(f"/v1/status/{path}")
            except PlatformError as exc:
                if exc.kind is Kind.NOT_FOUND:
                    continue
                raise
            try:
                timeline = await api.get(f"/v1/timeline/{path}")
            except PlatformError as exc:
                if exc.kind is not Kind.NOT_FOUND:
                    raise
                # Watched since the last sample: the first point comes with the next one.
                timeline = {"model": name, "live_version": None, "versions": {}, "drifts": [], "retrains": []}
            return status, timeline
        return None


async def processes(url: str) -> list[str]:
    """``url`` once per address its host resolves to (IP literals and unresolvable names as
    they are: the call will say what is wrong)."""
    parsed = httpx.URL(url)
    host = parsed.host
    try:
        ipaddress.ip_address(host)
        return [url]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parsed.port, type=socket.SOCK_STREAM)
    except OSError:
        return [url]
    # One family: a dual-stack name (localhost) is one process, not two.
    family = socket.AF_INET if any(info[0] == socket.AF_INET for info in infos) else socket.AF_INET6
    addresses = sorted({str(info[4][0]) for info in infos if info[0] == family})
    if len(addresses) <= 1:
        return [url]
    return [str(parsed.copy_with(host=address)) for address in addresses]
