"""The registry, as the federation reaches it: its public REST API and a scoped token.

The federation holds no platform secret, only a bearer token (``read`` and ``write``
scopes: ``mlops token create -s read -s write --subject service:federation``), and
calls the routes any other client would (docs/registry.md): the production version and
its artifact, the model's stored spec, model creation, spec and version registration.
JSON bodies are the proto3 JSON mapping of ``protos/mlops/v1``.

Every download is checked against the digest the registry declares; a refusal from the
registry becomes :class:`RegistryError` with the field it named.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import quote

import httpx


class RegistryError(Exception):
    """The registry refused a call, or answered what the federation cannot use."""

    def __init__(self, message: str, status: int = 0, field: str = ""):
        super().__init__(message)
        self.status = status
        self.field = field


class RegistryClient:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0, verify: str | bool = True):
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"authorization": f"Bearer {token}"},
            timeout=timeout,
            verify=verify,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            detail = body.get("detail") if isinstance(body, dict) else None
            field = body.get("field", "") if isinstance(body, dict) else ""
            raise RegistryError(
                f"{method} {path}: {response.status_code} {detail or response.text[:300]}",
                status=response.status_code,
                field=str(field or ""),
            )
        return response

    def _optional(self, path: str) -> dict[str, Any] | None:
        try:
            return dict(self._call("GET", path).json())
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise

    @staticmethod
    def _model(name: str) -> str:
        return f"/v1/models/{quote(name, safe='')}"

    def production(self, model: str) -> dict[str, Any] | None:
        """The version ``production`` points at, or None (no such model, or no alias)."""
        return self._optional(f"{self._model(model)}/aliases/production")

    def version(self, model: str, version: int) -> dict[str, Any]:
        return dict(self._call("GET", f"{self._model(model)}/versions/{int(version)}").json())

    def latest_spec(self, model: str) -> dict[str, Any] | None:
        """The model's newest stored spec, or None."""
        return self._optional(f"{self._model(model)}/specs/0")

    def download(self, model: str, version: dict[str, Any]) -> bytes:
        """The version's artifact, checked against the digest the version declares."""
        expected = str(version["artifact"]["sha256"])
        data = self._call("GET", f"{self._model(model)}/versions/{int(version['version'])}/artifact").content
        actual = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(actual, expected):
            raise RegistryError(
                f"artifact of {model} v{version['version']}: sha256 {actual}, expected {expected}"
            )
        return data

    def ensure_model(self, model: str, description: str) -> None:
        """Create the model (automatic promotion when its gates pass) unless it exists."""
        try:
            self._call("POST", "/v1/models", json={"name": model, "description": description})
        except RegistryError as exc:
            if exc.status != 409:
                raise

    def put_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", f"{self._model(spec['model_name'])}/specs", json=spec).json())

    def create_version(self, model: str, metadata: dict[str, Any], artifact: bytes) -> dict[str, Any]:
        response = self._call(
            "POST",
            f"{self._model(model)}/versions",
            data={"metadata": json.dumps(metadata)},
            files={"artifact": ("model.skops", artifact, "application/octet-stream")},
        )
        return dict(response.json())
